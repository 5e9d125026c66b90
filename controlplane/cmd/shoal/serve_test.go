package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestServe runs `shoal serve` on ephemeral loopback ports, waits for the
// log line that says where the API listens, uses the API, then cancels the
// command's context (as SIGINT does) and expects a clean exit.
func TestServe(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	pr, pw := io.Pipe()
	cmd := newRootCmd(io.Discard, pw)
	cmd.SetArgs([]string{"serve", "--log-format", "json", "--data-dir", dir,
		"--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", "--topic-prefix", "test/v1"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		err := cmd.ExecuteContext(ctx)
		pw.Close()
		done <- err
	}()

	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var line struct {
				Msg string `json:"msg"`
				URL string `json:"url"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "HTTP API listening" {
				urls <- line.URL
			}
		}
		io.Copy(io.Discard, pr)
	}()
	var url string
	select {
	case url = <-urls:
	case err := <-done:
		t.Fatalf("serve exited early: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("serve did not log its HTTP address within 60s")
	}

	resp, err := http.Get(url + "/api/v1/trust/public-key")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET public key = %d", resp.StatusCode)
	}
	if fi, err := os.Stat(filepath.Join(dir, "signing-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("signing key in --data-dir: %v", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve after cancel = %v; want a clean exit", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30s of cancel")
	}
}

func TestServeFlagDefaults(t *testing.T) {
	cmd := newServeCmd(&rootOptions{})
	for flag, want := range map[string]string{
		"data-dir": "./shoal-data", "http-addr": "127.0.0.1:8080", "mqtt-addr": "127.0.0.1:1883", "topic-prefix": "shoal/v1",
	} {
		if got := cmd.Flags().Lookup(flag).DefValue; got != want {
			t.Errorf("--%s default = %q; want %q", flag, got, want)
		}
	}
}
