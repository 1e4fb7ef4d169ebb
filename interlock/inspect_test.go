package interlock_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
	"github.com/dirlockd/dirlockd/shm"
)

// TestInspectDuringStorm: inspectors hammering a data directory must never
// make a starter fail.
func TestInspectDuringStorm(t *testing.T) {
	const cycles, inspectors = 300, 4
	dir := testutil.DataDir(t)
	c := testutil.StartHelper(t, "cycle", dir, strconv.Itoa(cycles))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var inspections int
	stop := make(chan struct{})
	for range inspectors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := interlock.Inspect(dir, interlock.Options{}); err != nil {
					t.Errorf("Inspect: %v", err)
					return
				}
				mu.Lock()
				inspections++
				mu.Unlock()
			}
		}()
	}
	line, err := c.ReadLine(2 * time.Minute)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(line, "done 0 ") {
		t.Fatalf("starter: %s; want no failure in %d cycles", line, cycles)
	}
	if inspections < 100 {
		t.Errorf("only %d inspections ran: the test proves little", inspections)
	}
	t.Logf("%d acquire/release cycles, %d concurrent inspections, 0 failed starts", cycles, inspections)
}

func TestInspectStates(t *testing.T) {
	dir := testutil.DataDir(t)
	state := func(want interlock.State) *interlock.Report {
		t.Helper()
		rep, err := interlock.Inspect(dir, fast)
		if err != nil || rep.State != want {
			t.Fatalf("Inspect: %+v, %v; want %s", rep, err, want)
		}
		return rep
	}
	if rep := state(interlock.Free); !strings.Contains(rep.Message(), "no pidfile") {
		t.Errorf("message %q", rep.Message())
	}
	if _, err := os.Stat(filepath.Join(dir, pidfile.DefaultName)); err == nil {
		t.Error("Inspect created the pidfile")
	}
	h := testutil.StartHelper(t, "hold", dir)
	h.Expect(t, "held")
	rep := state(interlock.Held)
	if !slices.Equal(rep.Holders, []int{h.PID()}) || rep.Record.PID != h.PID() {
		t.Errorf("held report: holders %v record %+v", rep.Holders, rep.Record)
	}
	h.Send(t, "release")
	h.Expect(t, "released")
	state(interlock.Free)
	h.Wait()
	h = testutil.StartHelper(t, "hold", dir)
	h.Expect(t, "held")
	h.Kill()
	if rep := state(interlock.Stale); !strings.Contains(rep.Message(), fmt.Sprintf("previous holder PID %d", h.PID())) {
		t.Errorf("stale message %q", rep.Message())
	}
	// Inspect must not have removed the dead holder's segment: it takes nothing.
	if id, _ := shm.DirIdentity(dir); true {
		segs, err := shm.Scan(id, shm.Owners{0, uint32(os.Geteuid())}, false)
		if err != nil || len(segs) != 1 || segs[0].State != shm.Unattached {
			t.Errorf("segments after Inspect: %+v, %v; want the dead holder's, unattached", segs, err)
		}
	}
	acquire(t, dir, interlock.Options{}) // reclaims the dead holder's segment
}
