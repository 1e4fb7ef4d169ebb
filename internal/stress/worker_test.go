package stress

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/testutil"
)

// TestWorkHolds: a worker in process takes and lets go of the directory
// through run's local guard at least 20 times, each hold a new one (its
// own record token) that the log shows begun and ended, with the counter
// in step, and stops when its input closes, leaving no segment (TestMain).
func TestWorkHolds(t *testing.T) {
	dir := t.TempDir()
	inR, inW := io.Pipe()
	out := &testutil.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- Work(context.Background(), WorkerConfig{Dir: dir, Opts: interlock.Options{}, Hold: time.Millisecond,
			Host: "h", ID: "w", Run: "r", In: inR, Out: out})
	}()
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(out.String(), MsgHolding+" ") < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 20 holds in 20 s:\n%s", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	inW.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the worker did not stop in 20 s after its input closed")
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	tokens := map[string]bool{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != MsgHolding || f[2] == "" {
			t.Fatalf("worker said %q", l)
		}
		tokens[f[2]] = true
	}
	if len(tokens) != len(lines) {
		t.Errorf("%d holds under %d record tokens: a hold was not a new acquisition", len(lines), len(tokens))
	}
	res, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	if res.Entered != len(lines) || res.Completed != len(lines) || res.Counter != int64(len(lines)) || res.ViolationCount != 0 {
		t.Errorf("%d holds told; the log: %d entered, %d completed, counter %d, %d violations %v",
			len(lines), res.Entered, res.Completed, res.Counter, res.ViolationCount, res.Violations)
	}
}
