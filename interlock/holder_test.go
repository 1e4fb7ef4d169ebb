package interlock_test

import (
	"os"
	"os/exec"
	"testing"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/testutil"
)

// TestPinHolder: a held directory's recorded holder (this process) is
// pinned and proven, through the same rule Inspect applies; a released one
// has no holder to pin, and a process that does not hold the lock is not
// pinned as one.
func TestPinHolder(t *testing.T) {
	dir := testutil.DataDir(t)
	l := acquire(t, dir, interlock.Options{})
	rep, err := interlock.Inspect(dir, fast)
	if err != nil || rep.State != interlock.Held {
		t.Fatalf("Inspect: %+v, %v; want held", rep, err)
	}
	h, err := rep.PinHolder()
	if err != nil {
		t.Fatalf("PinHolder of our own lock: %v", err)
	}
	if h.PID != os.Getpid() {
		t.Errorf("PinHolder = PID %d, want %d", h.PID, os.Getpid())
	}
	if err := h.Signal(0); err != nil {
		t.Errorf("signal 0 through the pin: %v", err)
	}
	h.Close()

	child := testutil.Start(t, exec.Command("sleep", "60"))
	pinned, others := rep.PinInstance([]int{os.Getpid(), child.PID()})
	if len(pinned) != 1 || pinned[0].PID != os.Getpid() || len(others) != 1 || others[0] != child.PID() {
		t.Errorf("PinInstance(us, a sleep) = %v, %v; want us pinned, the sleep among the others", pinned, others)
	}
	for _, p := range pinned {
		p.Close()
	}

	// A record naming a process that does not hold the lock proves nothing.
	forged := *rep
	rec := *rep.Record
	rec.PID, rec.PIDStart = child.PID(), 0
	forged.Record = &rec
	if h, err := forged.PinHolder(); err == nil {
		h.Close()
		t.Errorf("PinHolder of a record naming PID %d, which holds no lock, succeeded", child.PID())
	}

	l.Release()
	rep, err = interlock.Inspect(dir, fast)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := rep.PinHolder(); err == nil {
		h.Close()
		t.Errorf("PinHolder of a %s directory succeeded", rep.State)
	}
}
