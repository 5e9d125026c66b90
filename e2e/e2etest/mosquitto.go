package e2etest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Mosquitto is Debian's mosquitto broker, run on a fixed loopback port so
// that it can be stopped and started again at the same address.
type Mosquitto struct {
	t    testing.TB
	bin  string
	dir  string
	Addr string // host:port
	cmd  *exec.Cmd
	done chan struct{}
	runs int
}

// MosquittoPath finds the mosquitto binary on $PATH (Debian puts it in
// /usr/sbin), or "" when it is not there.
func MosquittoPath() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	return ""
}

// StartMosquitto starts mosquitto with anonymous access (Shoal's device
// ACL lives in its embedded broker; an external broker brings its own) and
// persistence on, in a temporary directory, and waits until it accepts
// connections. It skips the test when mosquitto is not installed.
func StartMosquitto(t testing.TB) *Mosquitto {
	t.Helper()
	bin := MosquittoPath()
	if bin == "" {
		t.Skip("needs mosquitto on $PATH, which this machine lacks (apt-get install mosquitto; it lives in /usr/sbin; .ci/run installs it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	m := &Mosquitto{t: t, bin: bin, dir: t.TempDir(), Addr: addr}
	m.Start()
	t.Cleanup(m.Stop)
	return m
}

// URL is the broker's tcp:// URL.
func (m *Mosquitto) URL() string { return "tcp://" + m.Addr }

// Start starts the broker (again) and waits until it accepts connections.
// Its persistence file keeps sessions and retained messages across a
// Stop/Start, as a real deployment's would.
func (m *Mosquitto) Start() {
	m.t.Helper()
	_, port, _ := net.SplitHostPort(m.Addr)
	conf := filepath.Join(m.dir, "mosquitto.conf")
	cfg := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nmax_packet_size 8388608\nmax_queued_messages 100000\n", port, m.dir)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		m.t.Fatal(err)
	}
	m.runs++
	logf, err := os.Create(filepath.Join(m.dir, fmt.Sprintf("mosquitto.%d.log", m.runs)))
	if err != nil {
		m.t.Fatal(err)
	}
	m.cmd = exec.Command(m.bin, "-c", conf)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	m.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); logf.Close(); close(done) }(m.cmd, m.done)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", m.Addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("mosquitto did not listen on %s: %v", m.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the broker with SIGTERM (it saves its persistence file) and
// waits for it to exit.
func (m *Mosquitto) Stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	select {
	case <-m.done:
		return
	default:
	}
	m.cmd.Process.Signal(os.Interrupt)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		m.cmd.Process.Kill()
		<-m.done
	}
}
