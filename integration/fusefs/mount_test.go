package fusefs

// The mounts themselves: what one writes the other reads, mount and
// unmount, and a Close while files are open.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/testutil"
)

// Whatever is written through one mount is seen through the other at once,
// through a fresh open and through a descriptor that was open all along:
// new content of the same size, a shorter file, a new file, a removed one.
// An O_APPEND writer appends at the size its own mount last saw; a stat of
// the descriptor first brings that up to date. rounds rounds per mode.
func TestCoherence(t *testing.T) {
	for _, mode := range []Mode{Shared, LocalOnly, NoFlock} {
		t.Run(mode.String(), func(t *testing.T) {
			_, mp := mountFS(t, mode, 2)
			a, b := startClient(t, "A@host0"), startClient(t, "B@host1")
			for round := range rounds {
				name := fmt.Sprintf("data%d", round)
				pa, pb := filepath.Join(mp[0], name), filepath.Join(mp[1], name)
				if _, err := os.Stat(pb); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("stat %s before it exists: %v", pb, err)
				}
				a.ok("open f %s rdwr,creat", pa)
				a.ok("pwrite f 0 hello")
				if got, err := os.ReadFile(pb); err != nil || string(got) != "hello" {
					t.Fatalf("read through host1: %q, %v; want \"hello\"", got, err)
				}
				b.ok("open f %s rdwr", pb)
				if got := b.ok("pread f 0 100"); got != `"hello"` {
					t.Fatalf("B reads %s, want \"hello\"", got)
				}
				a.ok("pwrite f 0 HELLO")
				if got := b.ok("pread f 0 100"); got != `"HELLO"` {
					t.Fatalf("B's open descriptor reads %s after a same-size rewrite, want \"HELLO\"", got)
				}
				a.ok("close f")
				a.ok("open f %s wronly,trunc", pa)
				a.ok("write f hi")
				if got, size := b.ok("pread f 0 100"), b.ok("size f"); got != `"hi"` || size != "2" {
					t.Fatalf("B's open descriptor reads %s, size %s after truncation, want \"hi\", 2", got, size)
				}
				a.ok("close f")

				// O_APPEND from both mounts, each refreshing its size first.
				a.ok("open ap %s wronly,append", pa)
				b.ok("open ap %s wronly,append", pb)
				for _, c := range []*client{a, b, a, b} {
					c.ok("size ap")
					c.ok("write ap /%s", strings.SplitN(c.name, "@", 2)[0])
				}
				if got, err := os.ReadFile(pa); err != nil || string(got) != "hi/A/B/A/B" {
					t.Fatalf("after appends through both mounts: %q, %v; want \"hi/A/B/A/B\"", got, err)
				}
				a.ok("close ap")
				b.ok("close ap")
				b.ok("close f")

				if err := os.Remove(pb); err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(pa); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("stat %s after removal through host1: %v", pa, err)
				}
			}
		})
	}
}

// Mount refuses what it cannot serve and leaves nothing mounted; Close is
// idempotent and leaves the mountpoints as plain directories.
func TestMountAndClose(t *testing.T) {
	dir := t.TempDir()
	backing, mp := filepath.Join(dir, "backing"), filepath.Join(dir, "mp")
	for _, d := range []string{backing, mp} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Mount(filepath.Join(dir, "missing"), Shared, mp); err == nil {
		t.Error("Mount of a missing backing directory succeeded")
	}
	if _, err := Mount(backing, Shared, mp, filepath.Join(dir, "missing")); err == nil {
		t.Error("Mount at a missing mountpoint succeeded")
	}
	inside := filepath.Join(backing, "mp")
	if err := os.Mkdir(inside, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Mount(backing, Shared, mp, inside); err == nil {
		t.Error("Mount at a mountpoint inside the backing directory succeeded")
	}
	if _, err := Mount(backing, Mode(7), mp); err == nil {
		t.Error("Mount in mode 7 succeeded")
	}
	if mounted(t, mp) {
		t.Fatalf("%s still mounted after a failed Mount", mp)
	}
	fs, err := Mount(backing, Shared, mp)
	if err != nil {
		t.Fatal(err)
	}
	if !mounted(t, mp) {
		t.Fatalf("%s not in /proc/self/mountinfo", mp)
	}
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fs.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if mounted(t, mp) {
		t.Fatalf("%s still mounted after Close", mp)
	}
	for m, want := range map[Mode]string{Shared: "shared", LocalOnly: "local-only", NoFlock: "no-flock"} {
		if m.String() != want {
			t.Errorf("Mode(%d).String() = %q, want %q", int(m), m.String(), want)
		}
	}
}

// Close detaches a mount that stays busy.
func TestCloseBusy(t *testing.T) {
	fs, mp := mountFS(t, Shared, 1)
	c := startClient(t, "C@host0")
	c.ok("open f %s rdwr,creat", filepath.Join(mp[0], "f"))
	done := make(chan error, 1)
	go func() { done <- fs.Close() }()
	// The mount leaves the tree; Close then waits for the server, which
	// serves c's open file until c lets go of it.
	testutil.Eventually(t, 5*time.Second, "busy mount detached", func() bool { return !mounted(t, mp[0]) })
	select {
	case err := <-done:
		t.Fatalf("Close returned (%v) while the server still served an open file", err)
	case <-time.After(100 * time.Millisecond):
	}
	c.kill()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// mounted reports whether dir is a mountpoint now.
func mounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}
