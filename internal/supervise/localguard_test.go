package supervise

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

// TestLocalGuard: the real interlock as a guard. Held, it gives the server
// its variables; kept, it reports a deleted pidfile as a loss within its
// recheck interval (over Changed, then Check, as the supervisor reads
// it); released, it can be acquired again, as stress's workers do for
// each hold. Rounds: 3.
func TestLocalGuard(t *testing.T) {
	dir := t.TempDir()
	log := &testutil.Buffer{}
	g := NewLocalGuard(dir, interlock.Options{Recheck: 100 * time.Millisecond}, slog.New(slog.NewTextHandler(log, nil)))
	for round := range 3 {
		if err := g.Acquire(context.Background()); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		env := g.Env()
		if !slices.Contains(env, "DIRLOCKD_DATADIR="+g.Lock().Record().DataDir) || !slices.Contains(env, "DIRLOCKD_LOCK_FD=3") {
			t.Errorf("round %d: env %v", round, env)
		}
		if round == 1 {
			if _, err := g.Keep(); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(dir, pidfile.DefaultName)); err != nil {
				t.Fatal(err)
			}
			select {
			case <-g.Changed():
			case <-time.After(10 * time.Second):
				t.Fatalf("no loss reported in 10 s (recheck 100ms); log:\n%s", log.String())
			}
			if ev := g.Check(); ev.Lost == nil || ev.Kill || ev.Deadlines {
				t.Errorf("event %+v, want a loss that OnLost decides", ev)
			}
			if ev := g.Check(); ev.Lost != nil {
				t.Errorf("the loss reported twice: %v", ev.Lost)
			}
		} else if ev := g.Check(); ev.Lost != nil {
			t.Fatalf("round %d: a loss before any: %v", round, ev.Lost)
		}
		g.Release() // round 1's fails: its pidfile is gone
		if g.Lock() != nil {
			t.Fatalf("round %d: still holds after Release", round)
		}
	}
	if n := strings.Count(log.String(), "released the data directory"); n != 3 {
		t.Errorf("%d releases logged, want 3:\n%s", n, log.String())
	}
}
