// Package reconcile turns the device's desired state into running models.
//
// The Reconciler is level-triggered and idempotent: it is handed the latest
// DesiredState payload (SetDesired; older ones are dropped unseen) and
// brings the device to it, however often it sees the same state. For each
// deployment it verifies the DSSE envelope with the pinned key, parses and
// validates the manifest, and, when the model serving under that name is
// not exactly the manifest's version, walks it through the phases:
//
//	DOWNLOADING  GET the artifact (relative to the control plane's URL),
//	             resuming a partial file with Range
//	VERIFYING    size, SHA-256 and the cosign signature, pinned key
//	SELF_TEST    load with ONNX Runtime, check the I/O schema and run the
//	             manifest's self-test
//	ACTIVATING   commit the file, switch the on-disk state, swap the model
//	             into the serving set
//
// and reports the ReportedState at every phase change. A failure leaves the
// current model serving and is reported as FAILED with the reason. Network
// trouble is retried with backoff; anything wrong with the manifest or
// artifact is not retried until the desired state changes.
//
// Each serving version is also reported with when it started serving in
// this process (active_since_unix_ms) and whether it is healthy: it turns
// healthy once it has served the manifest's HealthCheck.min_predictions
// successful predictions or been active for its min_seconds, whichever
// comes first (the Config's defaults when the manifest has none; a zero
// criterion is off, and with both off it is healthy at once). It stays
// healthy until another version is activated. A health watcher beside
// Run's loop notices the counts and deadlines, so that a long download of
// one model does not hold back the report of another turning healthy.
//
// Decisions:
//   - A model that disappears from the desired state keeps serving (and is
//     reported with phase IDLE and no desired version): stopping a model
//     that local applications depend on because of a missing entry is the
//     less safe mistake, and an explicit removal is a future manifest kind.
//   - Expiry and release sequence are checked only when a manifest would
//     change what runs. A manifest already applied stays ACTIVE after it
//     expires: expiry bounds how long a manifest may be installed, and a
//     replay of what already runs changes nothing.
//   - A manifest that fails signature verification is reported in the
//     overall error only: its model name cannot be trusted, so it gets no
//     per-model status.
//   - applied_generation is the generation of the last desired state whose
//     every deployment became ACTIVE.
//   - A version already serving when the Reconciler is made (loaded from
//     disk as the agent starts) started serving then. It can turn healthy
//     only once a desired state has been applied: by the health check of
//     the manifest that deploys it, or by the defaults if none does. The
//     defaults must not declare it healthy just before a stricter manifest
//     arrives, since healthy never goes back.
package reconcile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/agent/internal/failpoint"
	"github.com/shoalfleet/shoal/agent/internal/inference"
	"github.com/shoalfleet/shoal/agent/internal/modelstore"
	"github.com/shoalfleet/shoal/internal/datastats"
	"github.com/shoalfleet/shoal/internal/onnxrt"
	"github.com/shoalfleet/shoal/internal/trust"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// Store is the on-disk model store the reconciler writes to.
type Store interface {
	// Partial returns the path and current size of the download of sha
	// ("" for a malformed digest).
	Partial(sha string) (path string, size int64)
	// RemovePartial deletes the download of sha, if any.
	RemovePartial(sha string) error
	// RemovePartialsExcept deletes the downloads not in keep.
	RemovePartialsExcept(keep map[string]bool) error
	// Commit moves a verified download into the store as model name's file.
	Commit(name, partPath, sha string) (string, error)
	// File returns model name's file for sha if the store holds it.
	File(name, sha string) (string, bool)
	// Activate atomically makes ref the active version (the old one
	// becomes the previous one).
	Activate(name string, ref modelstore.Ref) error
	// Previous returns the version active before the active one.
	Previous(name string) (modelstore.Ref, string, bool)
	// LastSequence returns the highest release sequence activated.
	LastSequence(name string) uint64
}

var _ Store = (*modelstore.Store)(nil)

// Models is the set of serving models. Its methods may be called from
// any goroutine.
type Models interface {
	// Refs returns the versions serving now.
	Refs() []inference.Ref
	// Usage returns the versions serving now with the predictions each
	// has served.
	Usage() []inference.Usage
	// Swap makes m the serving version of its name (the old one closes
	// after its in-flight predictions).
	Swap(m *inference.Model) (previous inference.Ref, had bool)
	// Acquire returns the serving version of name and a func to call
	// when done with it.
	Acquire(name string) (m *inference.Model, release func(), ok bool)
}

var _ Models = (*inference.Set)(nil)

// Doer sends HTTP requests.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

var _ Doer = (*http.Client)(nil)

// Loader loads a model file whose bytes must have ref.SHA256.
type Loader func(path string, ref inference.Ref, opts onnxrt.Options) (*inference.Model, error)

var _ Loader = inference.Load

// Reporter receives the reported state at every change. It is called from
// Run's goroutines, one call at a time and in order, and must not block
// (hand it to a publisher).
type Reporter func(*shoalv1.ReportedState)

// Defaults for the zero values of Config.
const (
	DefaultStallTimeout = time.Minute
	DefaultMinRetry     = 2 * time.Second
	DefaultMaxRetry     = 5 * time.Minute
)

// Config configures a Reconciler.
type Config struct {
	DeviceID     string
	AgentVersion string
	Profile      string
	// ServerURL is the control plane's base URL; relative artifact URLs
	// resolve against it.
	ServerURL string
	// Verifier holds the pinned trust root.
	Verifier *trust.Verifier
	Store    Store
	Models   Models
	// HTTP fetches artifacts; an http.Client without a timeout if nil
	// (downloads are bounded by StallTimeout instead, since a large model
	// on a slow link may take hours).
	HTTP Doer
	// Load loads models; inference.Load if nil.
	Load Loader
	// ORT tunes the sessions of loaded models.
	ORT onnxrt.Options
	// NoDataStats leaves the manifests' reference profiles unused: the
	// models keep no data statistics (the agent sends none).
	NoDataStats bool
	// Report receives the reported state; may be nil.
	Report Reporter
	// StallTimeout aborts a download that receives nothing for this long.
	StallTimeout time.Duration
	// MinRetry and MaxRetry bound the backoff between attempts after
	// network errors.
	MinRetry, MaxRetry time.Duration
	// HealthMinPredictions and HealthMinTime are the health check of a
	// version whose manifest has none: it is reported healthy once it has
	// served HealthMinPredictions successful predictions or been active
	// for HealthMinTime, whichever comes first. 0 means the default
	// (DefaultHealthMinPredictions, DefaultHealthMinTime); negative turns
	// that criterion off; with both off a version is healthy as soon as it
	// is active.
	HealthMinPredictions int64
	HealthMinTime        time.Duration
	// HealthPoll is how often the prediction counts of the versions not
	// yet healthy are looked at (DefaultHealthPoll if 0 or negative).
	HealthPoll time.Duration
	// Now is the clock (expiry, retry times, report times, how long a
	// version has been active); time.Now if nil.
	Now func() time.Time
}

// Reconciler applies desired states. SetDesired and State may be called
// from any goroutine; everything else happens on Run's.
type Reconciler struct {
	cfg    Config
	log    *slog.Logger
	server *url.URL
	retry  backoff

	// Owned by the Run goroutine.
	slots   map[string]*slot
	overall []string // errors not tied to a model
	applied uint64

	// pub serialises building and handing out reports, from the Run
	// goroutine (phase changes) and the health watcher (health changes),
	// and guards the fields below it. It is taken before mu.
	pub        sync.Mutex
	health     healthTracker
	base       *shoalv1.ReportedState // the latest state, what the watcher brings up to date
	lastReport *shoalv1.ReportedState // the latest handed to the Reporter
	healthWake chan struct{}          // asks the watcher to look again

	mu         sync.Mutex
	pending    []byte
	hasPending bool
	current    []byte             // the payload the running pass applies
	cancelPass context.CancelFunc // cancels the running pass
	state      *shoalv1.ReportedState
	wake       chan struct{}
}

// slot is the reconciler's memory of one desired model.
type slot struct {
	status  *shoalv1.ModelStatus
	desired modelstore.Ref
	// envelope is the digest of the manifest envelope this slot applies;
	// the fields below are about that envelope.
	envelope  string
	permanent bool // failed in a way retrying will not fix
	attempts  int  // transient failures in a row
	nextTry   time.Time
	// statsFor is the envelope whose reference profile the serving model
	// was given (or found unusable), so that a redelivered manifest is not
	// decoded, nor a bad profile logged, again.
	statsFor string
}

// New returns a Reconciler.
func New(cfg Config, log *slog.Logger) (*Reconciler, error) {
	switch {
	case cfg.DeviceID == "":
		return nil, errors.New("reconcile: no device id")
	case cfg.Verifier == nil:
		return nil, errors.New("reconcile: no trust root (Verifier)")
	case cfg.Store == nil:
		return nil, errors.New("reconcile: no model store")
	case cfg.Models == nil:
		return nil, errors.New("reconcile: no model set")
	}
	var server *url.URL
	if cfg.ServerURL != "" {
		u, err := url.Parse(cfg.ServerURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("reconcile: server URL %q: want http(s)://host[:port]", cfg.ServerURL)
		}
		server = u
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{}
	}
	if cfg.Load == nil {
		cfg.Load = inference.Load
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = DefaultStallTimeout
	}
	if cfg.MinRetry <= 0 {
		cfg.MinRetry = DefaultMinRetry
	}
	if cfg.MaxRetry < cfg.MinRetry {
		cfg.MaxRetry = max(DefaultMaxRetry, cfg.MinRetry)
	}
	if cfg.HealthPoll <= 0 {
		cfg.HealthPoll = DefaultHealthPoll
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reconciler{
		cfg:    cfg,
		log:    log.With("component", "reconcile"),
		server: server,
		retry:  backoff{min: cfg.MinRetry, max: cfg.MaxRetry},
		slots:  map[string]*slot{},
		health: healthTracker{
			defaults: configCheck(cfg.HealthMinPredictions, cfg.HealthMinTime),
			poll:     cfg.HealthPoll,
			versions: map[string]*versionHealth{},
			expected: map[string]expectedCheck{},
		},
		healthWake: make(chan struct{}, 1),
		wake:       make(chan struct{}, 1),
	}
	r.health.log = r.log
	// The versions serving already (loaded from disk as the agent
	// started) start serving now, as far as their health is concerned.
	r.pub.Lock()
	r.base = r.buildReport()
	r.refreshLocked()
	r.pub.Unlock()
	return r, nil
}

// SetDesired hands the reconciler the latest desired-state payload. It
// never blocks. A payload that differs from the one being applied cancels
// the work in progress (a partial download is kept for later).
func (r *Reconciler) SetDesired(payload []byte) {
	r.mu.Lock()
	r.pending, r.hasPending = bytes.Clone(payload), true
	if r.cancelPass != nil && !bytes.Equal(payload, r.current) {
		r.cancelPass()
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// State returns the latest reported state (a copy), e.g. to publish it
// again after a reconnect.
func (r *Reconciler) State() *shoalv1.ReportedState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return proto.Clone(r.state).(*shoalv1.ReportedState)
}

// Run applies desired states, and watches the health of the serving
// versions, until ctx is done, then returns nil.
func (r *Reconciler) Run(ctx context.Context) error {
	r.emit() // the state before any desired state arrives: what runs now
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		r.watchHealth(ctx)
	}()
	defer func() { <-watched }() // no report after Run returns
	var cur []byte
	var have bool
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
			r.mu.Lock()
			if r.hasPending {
				cur, have = r.pending, true
				r.pending, r.hasPending = nil, false
			}
			r.mu.Unlock()
		case <-timer.C:
		}
		if !have {
			continue
		}
		passCtx, cancel := context.WithCancel(ctx)
		r.mu.Lock()
		r.current, r.cancelPass = cur, cancel
		r.mu.Unlock()
		retry := r.pass(passCtx, cur)
		cancel()
		r.mu.Lock()
		r.current, r.cancelPass = nil, nil
		r.mu.Unlock()
		if retry > 0 {
			timer.Reset(retry)
		} else {
			timer.Stop()
		}
	}
}

// watchHealth looks at the health of the versions not yet healthy when
// their prediction counts may have grown (every HealthPoll), at their
// deadlines, and whenever the Run goroutine has reported, and reports
// what changed.
func (r *Reconciler) watchHealth(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.healthWake:
		case <-t.C:
		}
		if next := r.checkHealth(); next > 0 {
			t.Reset(next)
		} else {
			t.Stop()
		}
	}
}

// checkHealth brings the health of the serving versions up to date and
// reports if it changed. It returns when to look again (0: no version is
// waiting to turn healthy).
func (r *Reconciler) checkHealth() time.Duration {
	r.pub.Lock()
	defer r.pub.Unlock()
	return r.publishLocked()
}

// pass applies one desired state and returns how long until a transient
// failure should be retried (0: nothing to retry).
func (r *Reconciler) pass(ctx context.Context, payload []byte) time.Duration {
	r.overall = nil
	r.pub.Lock()
	// From now on a serving version the desired state does not deploy is
	// judged by the default health check.
	r.health.desiredSeen = true
	r.pub.Unlock()
	ds, err := decodeDesired(payload)
	if err != nil {
		r.overall = append(r.overall, err.Error())
		r.log.Warn("rejected the desired state", "err", err)
		r.emit()
		return 0
	}
	var manifests []*manifest
	seen := map[string]bool{}
	for i, env := range ds.GetDeployments() {
		m, err := openManifest(r.cfg.Verifier, env, r.cfg.Profile)
		if err != nil {
			msg := fmt.Sprintf("deployment %d of generation %d: %v", i, ds.GetGeneration(), err)
			r.overall = append(r.overall, msg)
			r.log.Warn("rejected a deployment", "index", i, "generation", ds.GetGeneration(), "err", err)
			continue
		}
		if name := m.GetModelName(); seen[name] {
			r.overall = append(r.overall, fmt.Sprintf("deployment %d of generation %d: model %q appears more than once; ignoring all but the first", i, ds.GetGeneration(), name))
			continue
		}
		seen[m.GetModelName()] = true
		manifests = append(manifests, m)
	}
	for name := range r.slots {
		if !seen[name] {
			delete(r.slots, name) // no longer desired: keeps serving, reported IDLE
			r.pub.Lock()
			r.health.forget(name)
			r.pub.Unlock()
		}
	}
	var retry time.Duration
	for _, m := range manifests {
		if ctx.Err() != nil {
			break
		}
		if d := r.apply(ctx, m); d > 0 && (retry == 0 || d < retry) {
			retry = d
		}
	}
	if ctx.Err() == nil {
		// Downloads the desired state no longer wants are abandoned; a
		// download waiting for a retry is kept to resume.
		keep := map[string]bool{}
		for _, m := range manifests {
			keep[m.GetArtifact().GetSha256()] = true
		}
		if err := r.cfg.Store.RemovePartialsExcept(keep); err != nil {
			r.log.Warn("could not remove abandoned downloads", "err", err)
		}
		if len(r.overall) == 0 && r.allActive() {
			r.applied = ds.GetGeneration()
		}
	}
	r.emit()
	return retry
}

func (r *Reconciler) allActive() bool {
	for _, s := range r.slots {
		if s.status.GetPhase() != shoalv1.Phase_PHASE_ACTIVE {
			return false
		}
	}
	return true
}

// apply brings one model to its manifest and returns the retry delay after
// a transient failure (0 otherwise).
func (r *Reconciler) apply(ctx context.Context, m *manifest) time.Duration {
	name := m.GetModelName()
	s := r.slots[name]
	if s == nil {
		s = &slot{status: &shoalv1.ModelStatus{Name: name}}
		r.slots[name] = s
	}
	if s.envelope != m.digest {
		s.envelope, s.permanent, s.attempts, s.nextTry = m.digest, false, 0, time.Time{}
	}
	s.desired = m.ref()
	r.pub.Lock()
	r.health.expect(name, s.desired, manifestCheck(m.GetHealthCheck(), r.health.defaults))
	r.pub.Unlock()

	if running, ok := r.serving(name); ok && sameRef(running, s.desired) {
		if s.statsFor != m.digest {
			// Serving already, e.g. loaded from disk as the agent started:
			// give it the statistics its manifest asks for.
			s.statsFor = m.digest
			if model, release, ok := r.cfg.Models.Acquire(name); ok {
				if sameRef(storeRef(model.Ref()), s.desired) {
					r.attachStats(model, m)
				}
				release()
			}
		}
		r.setPhase(s, shoalv1.Phase_PHASE_ACTIVE, "")
		return 0
	}
	if s.permanent {
		return 0 // failed for good; wait for a different desired state
	}
	if now := r.cfg.Now(); now.Before(s.nextTry) {
		return s.nextTry.Sub(now)
	}
	err := r.install(ctx, m, s)
	if err == nil {
		s.attempts, s.statsFor = 0, m.digest
		r.setPhase(s, shoalv1.Phase_PHASE_ACTIVE, "")
		return 0
	}
	if ctx.Err() != nil {
		return 0 // interrupted by a newer desired state or shutdown: no verdict
	}
	if retryable(err) {
		s.attempts++
		d := r.retry.delay(s.attempts)
		s.nextTry = r.cfg.Now().Add(d)
		r.log.Warn("could not apply the manifest; will retry", "model", name, "version", s.desired.Version,
			"attempt", s.attempts, "retry_in", d.Round(time.Millisecond), "err", err)
		r.setPhase(s, s.status.GetPhase(), fmt.Sprintf("%v; retrying in %s", err, d.Round(time.Millisecond)))
		return d
	}
	s.permanent = true
	r.log.Error("rejected the manifest; the current model keeps serving", "model", name, "version", s.desired.Version, "err", err)
	r.setPhase(s, shoalv1.Phase_PHASE_FAILED, err.Error())
	return 0
}

// install fetches, verifies, self-tests and activates m.
func (r *Reconciler) install(ctx context.Context, m *manifest, s *slot) error {
	name, want, a := m.GetModelName(), m.ref(), m.GetArtifact()
	if err := checkFresh(m.DeploymentManifest, r.cfg.Now()); err != nil {
		return permanent(err)
	}
	if last := r.cfg.Store.LastSequence(name); want.ReleaseSequence < last && !m.GetRollback() {
		return permanent(fmt.Errorf("release sequence %d of %s %s is below the last applied, %d; refusing a downgrade the control plane did not sign as a rollback",
			want.ReleaseSequence, name, want.Version, last))
	}
	if m.unknownFields {
		r.log.Info("the manifest has fields this agent does not know; ignoring them", "model", name, "version", want.Version)
	}

	// A file the store already holds (the previous version, for a
	// rollback) needs no download, but is verified against this manifest.
	path, local := r.cfg.Store.File(name, a.GetSha256())
	if local {
		r.setPhase(s, shoalv1.Phase_PHASE_VERIFYING, "")
		if err := verifyArtifact(r.cfg.Verifier, path, a); err != nil {
			r.log.Warn("the stored file does not verify against the manifest; downloading it", "model", name, "err", err)
			local = false
		}
	}
	part := ""
	if !local {
		var err error
		if part, err = r.fetch(ctx, s, a); err != nil {
			return err
		}
		path = part
	}

	failpoint.Hit(failpoint.Verified)
	r.setPhase(s, shoalv1.Phase_PHASE_SELF_TEST, "")
	discard := func() {
		if part != "" {
			if err := r.cfg.Store.RemovePartial(a.GetSha256()); err != nil {
				r.log.Warn("could not remove a rejected download", "err", err)
			}
		}
	}
	ref := inference.Ref{Name: name, Version: want.Version, SHA256: want.SHA256, ReleaseSequence: want.ReleaseSequence}
	model, err := r.cfg.Load(path, ref, r.cfg.ORT)
	if err != nil {
		discard()
		return permanent(err)
	}
	if err := checkSchema(model, m.DeploymentManifest); err != nil {
		model.Close()
		discard()
		return permanent(err)
	}
	if err := model.SelfTest(m.GetSelfTest()); err != nil {
		model.Close()
		discard()
		return permanent(err)
	}

	r.attachStats(model, m)

	r.setPhase(s, shoalv1.Phase_PHASE_ACTIVATING, "")
	if part != "" {
		if _, err := r.cfg.Store.Commit(name, part, a.GetSha256()); err != nil {
			model.Close()
			return transient(err)
		}
	}
	if err := r.cfg.Store.Activate(name, want); err != nil {
		model.Close()
		return transient(err)
	}
	prev, had := r.cfg.Models.Swap(model)
	r.pub.Lock()
	r.health.activated(ref, r.cfg.Now(), manifestCheck(m.GetHealthCheck(), r.health.defaults))
	r.pub.Unlock()
	failpoint.Hit(failpoint.Activated)
	if had {
		r.log.Info("activated", "model", name, "version", want.Version, "sequence", want.ReleaseSequence, "replaced", prev.Version)
	} else {
		r.log.Info("activated", "model", name, "version", want.Version, "sequence", want.ReleaseSequence)
	}
	return nil
}

// attachStats gives model its manifest's capture share and the data
// statistics of its manifest's reference profile, if it has one. A profile that does not decode or does not fit
// the model is logged and the model serves without statistics: they are a
// report on the version, not a reason to refuse it.
func (r *Reconciler) attachStats(model *inference.Model, m *manifest) {
	model.SetCaptureShare(m.GetCaptureShare())
	b := m.GetReferenceProfile()
	if len(b) == 0 || r.cfg.NoDataStats || model.Stats() != nil {
		return
	}
	p, err := datastats.DecodeProfile(b)
	var st *inference.DataStats
	if err == nil {
		st, err = inference.NewDataStats(p, model)
	}
	if err != nil {
		r.log.Warn("the manifest's reference profile is unusable; the model serves without data statistics",
			"model", m.GetModelName(), "version", m.GetModelVersion(), "err", err)
		return
	}
	model.SetStats(st)
}

// fetch downloads and verifies the artifact and returns its partial file.
func (r *Reconciler) fetch(ctx context.Context, s *slot, a *shoalv1.Artifact) (string, error) {
	for try := 0; ; try++ {
		r.setPhase(s, shoalv1.Phase_PHASE_DOWNLOADING, "")
		resumed, err := r.download(ctx, a)
		if err != nil {
			return "", err
		}
		failpoint.Hit(failpoint.Downloaded)
		part, _ := r.cfg.Store.Partial(a.GetSha256())
		r.setPhase(s, shoalv1.Phase_PHASE_VERIFYING, "")
		err = verifyArtifact(r.cfg.Verifier, part, a)
		if err == nil {
			return part, nil
		}
		if rerr := r.cfg.Store.RemovePartial(a.GetSha256()); rerr != nil {
			r.log.Warn("could not remove a rejected download", "err", rerr)
		}
		if resumed && try == 0 && errors.Is(err, errDigest) {
			// The bytes kept from an earlier attempt may not be what the
			// server sent (a power cut before they reached the disk).
			r.log.Warn("a resumed download does not match its digest; downloading it again from the start", "sha256", a.GetSha256())
			continue
		}
		return "", err
	}
}

// serving returns the version serving under name.
func (r *Reconciler) serving(name string) (modelstore.Ref, bool) {
	for _, ref := range r.cfg.Models.Refs() {
		if ref.Name == name {
			return storeRef(ref), true
		}
	}
	return modelstore.Ref{}, false
}

func sameRef(a, b modelstore.Ref) bool {
	return a.Name == b.Name && a.Version == b.Version && a.SHA256 == b.SHA256 && a.ReleaseSequence == b.ReleaseSequence
}

// setPhase records a slot's phase and error and reports if either changed.
func (r *Reconciler) setPhase(s *slot, phase shoalv1.Phase, errMsg string) {
	st := s.status
	desired := refProto(s.desired)
	if st.GetPhase() == phase && st.GetError() == errMsg && proto.Equal(st.GetDesired(), desired) {
		return
	}
	st.Phase, st.Error, st.Desired = phase, errMsg, desired
	st.ChangedAtUnixMs = r.cfg.Now().UnixMilli()
	if phase != shoalv1.Phase_PHASE_FAILED && phase != shoalv1.Phase_PHASE_ACTIVE {
		r.log.Debug("phase", "model", st.GetName(), "version", s.desired.Version, "phase", phase.String())
	}
	r.emit()
}

// emit builds the reported state and hands it to the Reporter if it
// differs from the last one (apart from its time). It is called on the
// Run goroutine, which owns what buildReport reads.
func (r *Reconciler) emit() {
	rs := r.buildReport()
	r.pub.Lock()
	r.base = rs
	r.publishLocked()
	r.pub.Unlock()
	select {
	case r.healthWake <- struct{}{}: // an activation or a new health check may change when to look
	default:
	}
}

// refreshLocked brings the health of the serving versions up to date and
// merges it into r.base, which becomes the state State returns. It
// returns when to look again (0: no version is waiting to turn healthy).
// The caller holds r.pub.
func (r *Reconciler) refreshLocked() (next time.Duration) {
	now := r.cfg.Now()
	next = r.health.update(r.cfg.Models.Usage(), now)
	rs := proto.Clone(r.base).(*shoalv1.ReportedState)
	rs.ReportedAtUnixMs = now.UnixMilli()
	r.health.fill(rs)
	r.base = rs
	r.mu.Lock()
	r.state = rs
	r.mu.Unlock()
	return next
}

// publishLocked is refreshLocked, then hands the state to the Reporter if
// it differs from the last one handed (apart from its time). The caller
// holds r.pub.
func (r *Reconciler) publishLocked() (next time.Duration) {
	next = r.refreshLocked()
	rs := r.base
	if r.lastReport != nil {
		a, b := proto.Clone(rs).(*shoalv1.ReportedState), proto.Clone(r.lastReport).(*shoalv1.ReportedState)
		a.ReportedAtUnixMs, b.ReportedAtUnixMs = 0, 0
		if proto.Equal(a, b) {
			return next
		}
	}
	r.lastReport = rs
	if r.cfg.Report != nil {
		r.cfg.Report(proto.Clone(rs).(*shoalv1.ReportedState))
	}
	return next
}

// phaseRank orders phases from least to most advanced; FAILED is least.
var phaseRank = map[shoalv1.Phase]int{
	shoalv1.Phase_PHASE_FAILED:      0,
	shoalv1.Phase_PHASE_DOWNLOADING: 1,
	shoalv1.Phase_PHASE_VERIFYING:   2,
	shoalv1.Phase_PHASE_SELF_TEST:   3,
	shoalv1.Phase_PHASE_ACTIVATING:  4,
	shoalv1.Phase_PHASE_ACTIVE:      5,
}

func (r *Reconciler) buildReport() *shoalv1.ReportedState {
	rs := &shoalv1.ReportedState{
		SchemaVersion:     SchemaVersion,
		DeviceId:          r.cfg.DeviceID,
		AppliedGeneration: r.applied,
		Profile:           r.cfg.Profile,
		AgentVersion:      r.cfg.AgentVersion,
		ReportedAtUnixMs:  r.cfg.Now().UnixMilli(),
	}
	serving := map[string]inference.Ref{}
	for _, ref := range r.cfg.Models.Refs() {
		serving[ref.Name] = ref
	}
	names := make([]string, 0, len(r.slots)+len(serving))
	for n := range r.slots {
		names = append(names, n)
	}
	for n := range serving {
		if r.slots[n] == nil {
			names = append(names, n)
		}
	}
	sort.Strings(names)

	phase := shoalv1.Phase_PHASE_IDLE
	var firstErr string
	if len(r.overall) > 0 {
		phase, firstErr = shoalv1.Phase_PHASE_FAILED, r.overall[0]
	}
	for _, n := range names {
		var ms *shoalv1.ModelStatus
		if s := r.slots[n]; s != nil {
			ms = proto.Clone(s.status).(*shoalv1.ModelStatus)
			if phase == shoalv1.Phase_PHASE_IDLE || phaseRank[ms.GetPhase()] < phaseRank[phase] {
				phase = ms.GetPhase()
			}
			if firstErr == "" {
				firstErr = ms.GetError()
			}
		} else {
			ms = &shoalv1.ModelStatus{Name: n, Phase: shoalv1.Phase_PHASE_IDLE}
		}
		if ref, ok := serving[n]; ok {
			ms.Active = ref.Proto()
		}
		if prev, _, ok := r.cfg.Store.Previous(n); ok {
			ms.Previous = refProto(prev)
		}
		rs.Models = append(rs.Models, ms)
	}
	rs.Phase, rs.Error = phase, firstErr
	return rs
}

func refProto(r modelstore.Ref) *shoalv1.ModelRef {
	if r.IsZero() {
		return nil
	}
	return &shoalv1.ModelRef{Name: r.Name, Version: r.Version, Sha256: r.SHA256, ReleaseSequence: r.ReleaseSequence}
}

// backoff is exponential backoff with equal jitter.
type backoff struct{ min, max time.Duration }

func (b backoff) delay(attempt int) time.Duration {
	d := b.min
	for i := 1; i < attempt && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	half := d / 2
	return half + time.Duration(rand.Float64()*float64(d-half))
}
