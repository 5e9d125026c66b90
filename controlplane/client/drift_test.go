package client

import (
	"context"
	"net/http"
	"testing"
	"time"
)

func TestDriftRequests(t *testing.T) {
	ctx := context.Background()
	c, last := recordingServer(t, `{"model":"m1","policy":{"metric":"psi","threshold":0.2,"min_samples":500,"windows":3,"updated_at":"2026-03-01T00:00:00Z"},
	 "windows":[{"version":"1","cohort":"all","start":"2026-03-01T00:00:00Z","samples":600,"psi":0.5,"breach":true,
	  "features":[{"name":"a","side":"input","psi":0.5,"js":0.1,"ks":0.2}]}]}`)

	r, err := c.Drift(ctx, "m1", DriftQuery{Version: "1", Cohort: "profile:rpi4", Last: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if q := last(); q.method != http.MethodGet || q.path != "/api/v1/drift/m1" || q.query != "cohort=profile%3Arpi4&last=2h0m0s&version=1" {
		t.Errorf("Drift asked %+v", q)
	}
	if r.Policy == nil || r.Policy.Windows != 3 || len(r.Windows) != 1 || !r.Windows[0].Breach || r.Windows[0].Features[0].KS != 0.2 {
		t.Errorf("report = %+v", r)
	}
	if _, err := c.Drift(ctx, "m1", DriftQuery{}); err != nil {
		t.Fatal(err)
	}
	if q := last(); q.query != "" {
		t.Errorf("Drift with no query asked %+v", q)
	}

	c, last = recordingServer(t, `{"metric":"ks","threshold":0.3,"min_samples":10,"windows":2,"updated_at":"2026-03-01T00:00:00Z"}`)
	if _, err := c.SetDriftPolicy(ctx, "m1", DriftPolicy{Metric: "ks", Threshold: 0.3, MinSamples: 10, Windows: 2, UpdatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if q := last(); q.method != http.MethodPut || q.path != "/api/v1/drift/m1/policy" || q.body != `{"metric":"ks","threshold":0.3,"min_samples":10,"windows":2}` {
		t.Errorf("SetDriftPolicy asked %+v", q)
	}
	if p, err := c.DriftPolicy(ctx, "m1"); err != nil || p.Metric != "ks" || p.Windows != 2 || p.UpdatedAt.IsZero() {
		t.Fatalf("DriftPolicy = %+v, %v", p, err)
	}
	if q := last(); q.method != http.MethodGet || q.path != "/api/v1/drift/m1/policy" {
		t.Errorf("DriftPolicy asked %+v", q)
	}
	c, last = recordingServer(t, `{"alerts":[{"id":"x","model":"m1","top_features":[{"name":"a"}]}]}`)
	as, err := c.Alerts(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	if q := last(); q.path != "/api/v1/alerts" || q.query != "model=m1" {
		t.Errorf("Alerts asked %+v", q)
	}
	if len(as) != 1 || as[0].TopFeatures[0].Name != "a" {
		t.Errorf("alerts = %+v", as)
	}
}
