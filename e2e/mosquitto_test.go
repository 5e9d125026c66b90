package e2e

import (
	"math/rand/v2"
	"testing"

	"github.com/shoalfleet/shoal/controlplane/controltest"
	"github.com/shoalfleet/shoal/e2e/e2etest"
	"github.com/shoalfleet/shoal/internal/onnxrt"
)

// TestMosquittoInterop runs the spine over Debian's Mosquitto 2.0 instead
// of the embedded broker: enroll, deploy, ORT-equal predictions, exact
// telemetry counts.
func TestMosquittoInterop(t *testing.T) {
	onnxrt.MustInitForTest(t)
	url := e2etest.StartMosquitto(t).URL()
	cp := controltest.Start(t, controltest.WithBrokerURL(url), controltest.WithLogger(testLogger(t)))
	agents := []*fleetAgent{startAgent(t, cp, "mq-1"), startAgent(t, cp, "mq-2")}
	v1 := classifier(t, 5)
	cp.PushModel(t, "clf", "1", v1)
	cp.Deploy(t, "clf", "1")
	waitDevices(t, cp.Client, "v1 active over mosquitto", allActive(2, "clf", "1"))
	ref, err := onnxrt.Open(v1, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	r := rand.New(rand.NewPCG(3, 4))
	for _, fa := range agents {
		checkPredictions(t, fa, ref, "1", 20, r)
	}
	waitTelemetry(t, cp.Client, agents)
}
