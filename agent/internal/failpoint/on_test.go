//go:build failpoints

package failpoint

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary act as the process under test.
const helperEnv = "FAILPOINT_TEST_HELPER"

// TestMain runs the helper when asked: it hits downloaded three times,
// printing a marker after each hit it survives.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		go func() {
			for i := 1; i <= 3; i++ {
				Hit(Downloaded)
				Hit(Verified) // not armed: never written
				fmt.Fprintf(os.Stderr, "survived %d\n", i)
			}
			os.Exit(0)
		}()
		time.Sleep(time.Minute) // keeps main alive while a hit pauses
		os.Exit(3)
	}
	os.Exit(m.Run())
}

// helper starts the test binary as the helper with spec armed and returns
// it with a reader of its stderr.
func helper(t *testing.T, spec string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", Env+"="+spec)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, bufio.NewReader(stderr)
}

func readLines(t *testing.T, r *bufio.Reader, n int) []string {
	t.Helper()
	var lines []string
	for len(lines) < n {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", lines, err)
		}
		lines = append(lines, strings.TrimSuffix(l, "\n"))
	}
	return lines
}

func TestKillAtHit(t *testing.T) {
	cmd, r := helper(t, "downloaded=kill@2")
	rest, _ := io.ReadAll(r)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper exited with %v; want killed by SIGKILL", err)
	}
	want := "failpoint: name=downloaded hit=1 rule=kill@2 effect=none\nsurvived 1\nfailpoint: name=downloaded hit=2 rule=kill@2 effect=kill\n"
	if string(rest) != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", rest, want)
	}
}

func TestPauseAtHit(t *testing.T) {
	cmd, r := helper(t, "downloaded=pause@2")
	got := readLines(t, r, 3)
	want := []string{"failpoint: name=downloaded hit=1 rule=pause@2 effect=none", "survived 1", "failpoint: name=downloaded hit=2 rule=pause@2 effect=pause"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("stderr %q; want %q", got, want)
	}
	// Paused: the goroutine goes no further, the process lives on until
	// killed. Kill it and check that nothing came after the pause line.
	cmd.Process.Signal(syscall.SIGKILL)
	rest, _ := io.ReadAll(r)
	cmd.Wait()
	if len(rest) != 0 {
		t.Errorf("the paused goroutine carried on: %q", rest)
	}
}

func TestLogEveryHit(t *testing.T) {
	cmd, r := helper(t, "downloaded=log")
	rest, _ := io.ReadAll(r)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v\n%s", err, rest)
	}
	var want strings.Builder
	for i := 1; i <= 3; i++ {
		fmt.Fprintf(&want, "failpoint: name=downloaded hit=%d rule=log effect=none\nsurvived %d\n", i, i)
	}
	if string(rest) != want.String() {
		t.Errorf("stderr:\n%s\nwant:\n%s", rest, want.String())
	}
}

func TestBadSpecStops(t *testing.T) {
	cmd, r := helper(t, "downloaded=boom")
	rest, _ := io.ReadAll(r)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(rest), `unknown action "boom"`) {
		t.Fatalf("helper with a bad spec: %v, stderr %q; want exit 2 naming the action", err, rest)
	}
}

func TestUnarmedIsSilent(t *testing.T) {
	if !Enabled {
		t.Fatal("Enabled is false with the failpoints tag")
	}
	cmd, r := helper(t, "")
	rest, _ := io.ReadAll(r)
	if err := cmd.Wait(); err != nil || string(rest) != "survived 1\nsurvived 2\nsurvived 3\n" {
		t.Fatalf("helper with nothing armed: %v, stderr %q", err, rest)
	}
}
