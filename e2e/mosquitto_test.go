package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/controlplane/controltest"
	"github.com/shoalfleet/shoal/internal/onnxrt"
)

// startMosquitto runs Debian's mosquitto on a free loopback port with
// anonymous access (Shoal's device ACL lives in its embedded broker; an
// external broker brings its own) and returns its tcp:// URL.
func startMosquitto(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
			if _, serr := os.Stat(p); serr == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		t.Skip("mosquitto is not installed (.ci/run installs it: apt-get install mosquitto)")
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_packet_size 8388608\n", port)), 0o644)
	cmd := exec.Command(bin, "-c", conf)
	logf, _ := os.Create(filepath.Join(dir, "mosquitto.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); logf.Close() })
	eventually(t, 10*time.Second, "mosquitto listening", func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
	return "tcp://" + addr
}

// TestMosquittoInterop runs the spine over Debian's Mosquitto 2.0 instead
// of the embedded broker: enroll, deploy, ORT-equal predictions, exact
// telemetry counts.
func TestMosquittoInterop(t *testing.T) {
	onnxrt.MustInitForTest(t)
	url := startMosquitto(t)
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
