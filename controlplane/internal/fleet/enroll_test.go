package fleet

import (
	"bytes"
	"encoding/base64"
	"sync"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/shoalerr"
)

func TestEnroll(t *testing.T) {
	e := newEnv(t)
	tok, err := e.svc.CreateToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(tok.Token); err != nil || len(raw) != 32 {
		t.Fatalf("token %q is not 32 bytes of base64url: %v", tok.Token, err)
	}
	if want := e.clk.Now().Add(time.Hour); !tok.ExpiresAt.Equal(want) {
		t.Errorf("ExpiresAt = %v; want %v", tok.ExpiresAt, want)
	}

	// Validation comes before the token is looked at, and does not spend it.
	_, err = e.svc.Enroll(ctx, EnrollRequest{Token: tok.Token, DeviceID: "bad/id"})
	wantCode(t, err, shoalerr.Invalid, "bad/id")

	cred, err := e.svc.Enroll(ctx, EnrollRequest{Token: tok.Token, DeviceID: "dev-1", AgentVersion: "0.1.0", Profile: "rpi4"})
	if err != nil {
		t.Fatal(err)
	}
	if cred.DeviceID != "dev-1" || cred.Username != "dev-1" || len(cred.Password) < 40 {
		t.Fatalf("credentials = %+v", cred)
	}
	if !e.svc.Authenticate("dev-1", cred.Password) {
		t.Error("Authenticate rejects the issued password")
	}
	for _, tc := range []struct{ user, pass string }{
		{"dev-1", cred.Password + "x"},
		{"dev-1", ""},
		{"dev-2", cred.Password},
		{"", cred.Password},
		{"../dev-1", cred.Password},
	} {
		if e.svc.Authenticate(tc.user, tc.pass) {
			t.Errorf("Authenticate(%q, %q) = true", tc.user, tc.pass)
		}
	}

	// The token is spent.
	_, err = e.svc.Enroll(ctx, EnrollRequest{Token: tok.Token, DeviceID: "dev-2"})
	wantCode(t, err, shoalerr.Unauthorized, "already been used")

	// Neither the token nor the password is stored in the clear.
	e.st.View(func(tx store.Tx) error {
		return tx.Scan([]byte("fleet/"), func(k, v []byte) error {
			for _, secret := range []string{tok.Token, cred.Password} {
				if bytes.Contains(k, []byte(secret)) || bytes.Contains(v, []byte(secret)) {
					t.Errorf("secret stored in the clear under %s", k)
				}
			}
			return nil
		})
	})

	// A device id enrolled already: Conflict, and the token stays good.
	tok2, err := e.svc.CreateToken(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := e.clk.Now().Add(DefaultTokenTTL); !tok2.ExpiresAt.Equal(want) {
		t.Errorf("default ExpiresAt = %v; want %v", tok2.ExpiresAt, want)
	}
	_, err = e.svc.Enroll(ctx, EnrollRequest{Token: tok2.Token, DeviceID: "dev-1"})
	wantCode(t, err, shoalerr.Conflict, `"dev-1" is already enrolled`)
	if _, err := e.svc.Enroll(ctx, EnrollRequest{Token: tok2.Token, DeviceID: "dev-2"}); err != nil {
		t.Fatalf("token refused after a conflict: %v", err)
	}

	// Unknown and missing tokens.
	_, err = e.svc.Enroll(ctx, EnrollRequest{Token: "not-a-token", DeviceID: "dev-3"})
	wantCode(t, err, shoalerr.Unauthorized, "not valid")
	_, err = e.svc.Enroll(ctx, EnrollRequest{Token: string(make([]byte, 5000)), DeviceID: "dev-3"})
	wantCode(t, err, shoalerr.Unauthorized, "not valid")
	_, err = e.svc.Enroll(ctx, EnrollRequest{DeviceID: "dev-3"})
	wantCode(t, err, shoalerr.Unauthorized, "missing")

	// Expiry.
	tok3, err := e.svc.CreateToken(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(time.Minute)
	_, err = e.svc.Enroll(ctx, EnrollRequest{Token: tok3.Token, DeviceID: "dev-3"})
	wantCode(t, err, shoalerr.Unauthorized, "expired")

	for _, ttl := range []time.Duration{-time.Second, MaxTokenTTL + time.Second} {
		_, err := e.svc.CreateToken(ctx, ttl)
		wantCode(t, err, shoalerr.Invalid, "out of range")
	}

	// Credentials survive a restart.
	e.reopen(t)
	if !e.svc.Authenticate("dev-1", cred.Password) {
		t.Error("Authenticate fails after reopening the store")
	}
}

func TestStaleTokensArePruned(t *testing.T) {
	e := newEnv(t)
	old, err := e.svc.CreateToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(time.Hour + tokenRetention + time.Second)
	if _, err := e.svc.CreateToken(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	n := 0
	e.st.View(func(tx store.Tx) error {
		return tx.Scan([]byte(tokenPrefix), func(_, _ []byte) error { n++; return nil })
	})
	if n != 1 {
		t.Errorf("%d token records; want 1 (the stale one pruned)", n)
	}
	_, err = e.svc.Enroll(ctx, EnrollRequest{Token: old.Token, DeviceID: "d"})
	wantCode(t, err, shoalerr.Unauthorized, "not valid")
}

func TestTokenEnrollsOneDeviceUnderConcurrency(t *testing.T) {
	e := newEnv(t)
	tok, err := e.svc.CreateToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = e.svc.Enroll(ctx, EnrollRequest{Token: tok.Token, DeviceID: string(rune('a' + i))})
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case shoalerr.CodeOf(err) != shoalerr.Unauthorized:
			t.Errorf("loser got %v; want Unauthorized", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d enrollments succeeded with one token; want 1", ok)
	}
	devs, err := e.svc.List(ctx)
	if err != nil || len(devs) != 1 {
		t.Fatalf("List = %d devices, %v; want 1", len(devs), err)
	}
}
