// Package failpoint lets fault-injection tests stop the agent at named
// points of its update and upload paths, so that a crash at exactly that
// point can be proven harmless.
//
// Production code calls Hit(name) at each point. In a normal build Hit is
// an empty function the compiler inlines away and Enabled is false, so the
// points cost nothing. Built with the tag `failpoints`
// (go build -tags failpoints ./agent/cmd/shoal-agent), the agent reads the
// SHOAL_FAILPOINTS environment variable at start-up:
//
//	SHOAL_FAILPOINTS=download-partial=kill
//	SHOAL_FAILPOINTS=upload-after-publish=pause@3,telemetry-after-append=log
//
// Each rule is name=action[@n]; n (default 1) is the hit of that point,
// counted from process start, at which the action happens:
//
//	kill   write the line, then SIGKILL the process: a crash at the point
//	pause  write the line, then block the goroutine that hit the point for
//	       good (the rest of the agent runs on); the test kills the process
//	       when it is ready, which is the same crash at a moment the test
//	       chooses, e.g. once it knows exactly which predictions the agent
//	       holds
//	log    write the line on every hit and carry on (no @n)
//
// Every hit of an armed point writes one line to stderr, which tests wait
// on:
//
//	failpoint: name=upload-after-ack hit=2 rule=pause@3 effect=none
//	failpoint: name=upload-after-ack hit=3 rule=pause@3 effect=pause
//
// Points (the constants below) are listed in docs/RELIABILITY.md with the
// tests that use them.
package failpoint

// Env is the environment variable a failpoints build reads its rules from.
const Env = "SHOAL_FAILPOINTS"

// The points. Each is hit once per occurrence of the event it names.
const (
	// DownloadPartial: a download has written at least half of the
	// artifact to its partial file (fsynced), once per download attempt.
	DownloadPartial = "download-partial"
	// Downloaded: the partial file holds the whole artifact; not yet
	// verified.
	Downloaded = "downloaded"
	// Verified: size, digest and signature checked; not yet self-tested.
	Verified = "verified"
	// ActivateBeforeState: the new model file is committed and the new
	// state file written and fsynced under a temporary name, not yet
	// renamed over state.json.
	ActivateBeforeState = "activate-before-state"
	// ActivateAfterState: state.json names the new version (renamed, the
	// directory fsynced); the serving set still holds the old model.
	ActivateAfterState = "activate-after-state"
	// Activated: the new model serves.
	Activated = "activated"
	// TelemetryAfterAppend: one telemetry record was appended to the
	// outbox (once per record); not yet sent.
	TelemetryAfterAppend = "telemetry-after-append"
	// UploadAfterPublish: a telemetry batch was published and the broker
	// acknowledged it (PUBACK); the control plane's Ack has not arrived.
	UploadAfterPublish = "upload-after-publish"
	// UploadAfterAck: the control plane's Ack for a batch arrived; its
	// records are not yet deleted from the outbox.
	UploadAfterAck = "upload-after-ack"
)

// Points lists every point, in the order of the paths they sit on.
var Points = []string{
	DownloadPartial, Downloaded, Verified, ActivateBeforeState, ActivateAfterState, Activated,
	TelemetryAfterAppend, UploadAfterPublish, UploadAfterAck,
}
