package pidfile

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/internal/testutil"
)

func TestClaimExcludesSecondClaim(t *testing.T) {
	tests := []struct {
		method Method
		want   Method // method that holds the lock
	}{
		{Auto, Flock},
		{Flock, Flock},
		{OFD, OFD},
	}
	for _, tt := range tests {
		t.Run(tt.method.String(), func(t *testing.T) {
			dir := testutil.DataDir(t)
			path := pidPath(dir)
			opts := Options{Method: tt.method}
			a := kernelHold(t, dir, tt.method)
			if a.Method() != tt.want {
				t.Fatalf("Method() = %v, want %v", a.Method(), tt.want)
			}
			if h, err := a.Holders(); err != nil || !slices.Equal(h, []int{os.Getpid()}) {
				t.Fatalf("Holders() = %v, %v; want [%d]", h, err, os.Getpid())
			}

			b, err := Claim(dir, opts)
			if b != nil {
				b.Close()
				t.Fatal("second Claim returned a File")
			}
			wantLocked(t, err, fmt.Sprintf("%s (%s)", path, tt.want))
			if locks := locksOn(t, path); len(locks) != 1 {
				t.Fatalf("/proc/locks after a refused Claim: %+v, want only the holder's", locks)
			}

			// Unlock, and another File can claim it.
			if err := a.Unlock(); err != nil {
				t.Fatal(err)
			}
			c, err := Claim(dir, opts)
			if err != nil {
				t.Fatalf("Claim after Unlock: %v", err)
			}
			if c.Method() != tt.want {
				t.Fatalf("Method() = %v, want %v", c.Method(), tt.want)
			}
			if err := a.TryLock(tt.method); !errors.Is(err, ErrLocked) {
				t.Fatalf("TryLock while another File holds it: %v, want ErrLocked", err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}

			// Lock again, then Close releases.
			if err := a.TryLock(tt.method); err != nil {
				t.Fatalf("TryLock after the other File closed: %v", err)
			}
			_, err = Claim(dir, opts)
			wantLocked(t, err, path)
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			d, err := Claim(dir, opts)
			if err != nil {
				t.Fatalf("Claim after Close: %v", err)
			}
			d.Close()
			if locks := locksOn(t, path); len(locks) != 0 {
				t.Fatalf("/proc/locks after every File closed: %+v", locks)
			}
		})
	}
}

// TestPOSIXAcrossProcesses: POSIX locks never conflict within one process,
// so the holder is a helper.
func TestPOSIXAcrossProcesses(t *testing.T) {
	dir := testutil.DataDir(t)
	path := pidPath(dir)
	p := testutil.StartHelper(t, "hold", dir, "posix")
	p.Expect(t, "locked posix")

	_, err := Claim(dir, Options{Method: POSIX})
	wantLocked(t, err, path+" (posix)")
	_, err = Claim(dir, Options{Method: OFD})
	wantLocked(t, err, path+" (ofd)")
	// flock does not conflict with a POSIX lock: the mixed-family guard
	// must refuse.
	for _, m := range []Method{Auto, Flock} {
		_, err = Claim(dir, Options{Method: m})
		wantLocked(t, err, path, "another process, with an fcntl lock,", "must use the same lock method")
	}
	if locks := locksOn(t, path); len(locks) != 1 || locks[0].Kind != "POSIX" || locks[0].PID != p.PID() {
		t.Fatalf("/proc/locks: %+v, want only the helper's POSIX lock", locks)
	}
	r, err := Read(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome != Held || !slices.Equal(r.Holders, []int{p.PID()}) {
		t.Fatalf("Read: %v holders %v, want held by [%d]", r.Outcome, r.Holders, p.PID())
	}

	p.Kill()
	f := claim(t, dir, Options{Method: POSIX})
	if f.Method() != POSIX {
		t.Fatalf("Method() = %v, want posix", f.Method())
	}
}

func TestMixedFamilyInProcess(t *testing.T) {
	self := fmt.Sprintf("PID %d, with a flock,", os.Getpid())
	tests := []struct {
		hold, try Method
		holdKind  string // /proc/locks kind of the holder's lock
		want      string
	}{
		{Flock, OFD, "FLOCK", self},
		{Flock, POSIX, "FLOCK", self},
		{OFD, Flock, "OFDLCK", "another process, with an fcntl lock,"},
		{OFD, Auto, "OFDLCK", "another process, with an fcntl lock,"},
	}
	for _, tt := range tests {
		t.Run(tt.hold.String()+"-then-"+tt.try.String(), func(t *testing.T) {
			dir := testutil.DataDir(t)
			path := pidPath(dir)
			h := kernelHold(t, dir, tt.hold)
			if h.Method() != tt.hold {
				t.Fatalf("holder Method() = %v", h.Method())
			}
			f, err := Claim(dir, Options{Method: tt.try})
			if f != nil {
				f.Close()
				t.Fatalf("Claim with %v while %v held succeeded", tt.try, tt.hold)
			}
			wantLocked(t, err, path, tt.want, "must use the same lock method")
			// A File that stays open after a refused TryLock must not keep
			// the lock it placed before it saw the other family's.
			o, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			wantLocked(t, o.TryLock(tt.try), path, tt.want)
			if locks := locksOn(t, path); len(locks) != 1 || locks[0].Kind != tt.holdKind {
				o.Close()
				t.Fatalf("/proc/locks after a refused TryLock: %+v, want only the holder's %s", locks, tt.holdKind)
			}
			o.Close()
			h.Close()
			g := claim(t, dir, Options{Method: tt.try})
			// Auto takes flock here; the others take what they ask for.
			if want := max(tt.try, Flock); g.Method() != want {
				t.Fatalf("Claim with %v once the holder closed: Method() = %v, want %v", tt.try, g.Method(), want)
			}
		})
	}
}

// TestInheritedLock: a helper locks the pidfile, hands the descriptor to
// /bin/sleep and exits. The sleep, which never heard of pidfiles, holds the
// data directory until it dies.
func TestInheritedLock(t *testing.T) {
	dir := testutil.DataDir(t)
	path := pidPath(dir)
	p := testutil.StartHelper(t, "inherit", dir)
	helperPID := p.PID()
	sleepPID, err := strconv.Atoi(p.Expect(t, "sleep "))
	if err != nil {
		t.Fatal(err)
	}
	start, err := proc.StartTime(sleepPID)
	if err != nil {
		t.Fatalf("sleep %d: %v", sleepPID, err)
	}
	// Not our child: kill it by PID, once we are sure it is still the
	// process the helper started.
	kill := func() {
		if proc.Alive(sleepPID, start) {
			syscall.Kill(sleepPID, syscall.SIGKILL)
		}
	}
	t.Cleanup(kill)
	// exec.Cmd.Start returns once the exec has closed its close-on-exec
	// pipe, which the kernel does a moment before it sets up the new
	// command line: an early read can find none.
	cmd := proc.Cmdline(sleepPID)
	for deadline := time.Now().Add(time.Second); cmd == "?" && time.Now().Before(deadline); cmd = proc.Cmdline(sleepPID) {
		time.Sleep(time.Millisecond)
	}
	if cmd != "/bin/sleep 60" {
		t.Fatalf("PID %d runs %q, want /bin/sleep 60", sleepPID, cmd)
	}
	if code := p.Wait(); code != 0 {
		t.Fatalf("helper exited with %d", code)
	}

	_, err = Claim(dir, Options{})
	wantLocked(t, err, path+" (flock)")
	f, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if h, err := f.Holders(); err != nil || !slices.Equal(h, []int{sleepPID}) {
		t.Fatalf("Holders() = %v, %v; want exactly [%d]", h, err, sleepPID)
	}
	r, err := Read(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome != Held || !slices.Equal(r.Holders, []int{sleepPID}) {
		t.Fatalf("Read: %v, holders %v; want held by [%d]", r.Outcome, r.Holders, sleepPID)
	}
	if r.Record == nil || r.Record.PID != helperPID || r.Record.Token != "tok-inherit" {
		t.Fatalf("Read record %+v (err %v), want the helper's (PID %d)", r.Record, r.Err, helperPID)
	}

	kill()
	var g *File
	for deadline := time.Now().Add(5 * time.Second); ; {
		if g, err = Claim(dir, Options{}); err == nil {
			break
		}
		if !errors.Is(err, ErrLocked) || time.Now().After(deadline) {
			t.Fatalf("Claim after killing the sleep: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.Close()
	r, err = Read(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome != NotHeld || len(r.Holders) != 0 {
		t.Fatalf("Read after the sleep died: %v, holders %v; want not held", r.Outcome, r.Holders)
	}
}

// TestStrayDescriptorParked: a descriptor of a held inode that was opened
// anyway (a path swapped between the registry's lookup and the open) is
// parked on the holder instead of closed, so a POSIX lock survives, and is
// closed with the holder.
func TestStrayDescriptorParked(t *testing.T) {
	dir := testutil.DataDir(t)
	f := claim(t, dir, Options{Method: POSIX})
	fds := openFDs(t)
	fd, err := openRetry(pidPath(dir), unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := closeFile(os.NewFile(uintptr(fd), pidPath(dir)), f.dev, f.ino, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.CheckLock(); err != nil {
		t.Fatalf("CheckLock after a stray descriptor was closed: %v", err)
	}
	if got := openFDs(t); got != fds+1 {
		t.Fatalf("%d descriptors open, want %d (the stray one parked)", got, fds+1)
	}
	f.Close()
	if got := openFDs(t); got != fds-1 {
		t.Fatalf("%d descriptors open after the holder closed, want %d", got, fds-1)
	}
}
