package fusefs

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/testutil"
)

// rounds is how many times each scenario runs, per mode and lock kind, on
// the same mounts and files: a round that left a lock behind (a FLUSH or
// RELEASE not handled) fails the next one.
const rounds = 3

// blockFor is how long a lock call must stay blocked to count as blocked.
const blockFor = 150 * time.Millisecond

// kind is a way to lock a whole file: flock, classic POSIX fcntl, or OFD.
type kind struct {
	name                  string
	try, wait, shared, un string // client commands; %s is the file's name
}

var (
	flockKind = kind{name: "flock", try: "flock %s ex nb", wait: "flock %s ex", shared: "flock %s sh nb", un: "flock %s un"}
	posixKind = kind{name: "posix", try: "lk %s setlk w 0 0", wait: "lk %s setlkw w 0 0", shared: "lk %s setlk r 0 0", un: "lk %s setlk u 0 0"}
	ofdKind   = kind{name: "ofd", try: "lk %s ofdsetlk w 0 0", wait: "lk %s ofdsetlkw w 0 0", shared: "lk %s ofdsetlk r 0 0", un: "lk %s ofdsetlk u 0 0"}
)

// tableKinds are the lock kinds that go to the central table in mode.
func tableKinds(mode Mode) []kind {
	if mode == NoFlock {
		return []kind{posixKind, ofdKind}
	}
	return []kind{flockKind, posixKind, ofdKind}
}

// eventually polls cond for up to 5 s: flock and OFD locks go when the
// kernel's asynchronous RELEASE reaches the server, a moment after close(2)
// or the holder's death.
// tryLock reports whether c got k's lock on file (failing the test on any
// outcome but success or EAGAIN).
func tryLock(t *testing.T, c *client, k kind, file string) bool {
	t.Helper()
	switch r := c.do(k.try, file); r {
	case "ok":
		return true
	case "err EAGAIN":
		return false
	default:
		t.Fatalf("%s: %s: %s", c.name, fmt.Sprintf(k.try, file), r)
		return false
	}
}

func wantLocks(t *testing.T, fs *FS, n int) {
	t.Helper()
	if got := fs.Locks(); got != n {
		t.Fatalf("lock table holds %d locks, want %d", got, n)
	}
}

// Every lock kind that goes to the table excludes across mounts, for
// exclusive and shared requests, LOCK_NB and blocking; unlock wakes a
// blocked waiter on the other mount. rounds rounds per mode and kind.
func TestExcludeAcrossMounts(t *testing.T) {
	for _, mode := range []Mode{Shared, NoFlock} {
		for _, k := range tableKinds(mode) {
			t.Run(mode.String()+"/"+k.name, func(t *testing.T) {
				fs, _, a, b := openOnBoth(t, mode, "pid")
				for range rounds {
					a.ok(k.try, "f")
					wantLocks(t, fs, 1)
					b.fails(syscall.EAGAIN, k.try, "f")
					b.fails(syscall.EAGAIN, k.shared, "f")
					b.send(k.wait, "f")
					b.quiet(blockFor, "blocking lock on the other mount")
					a.ok(k.un, "f")
					if r := b.wait("blocking lock"); r != "ok" {
						t.Fatalf("B: blocking lock after A's unlock: %s", r)
					}
					a.fails(syscall.EAGAIN, k.try, "f")
					b.ok(k.un, "f")
					wantLocks(t, fs, 0)
					// Shared locks coexist across mounts.
					a.ok(k.shared, "f")
					b.ok(k.shared, "f")
					a.fails(syscall.EAGAIN, k.try, "f")
					a.ok(k.un, "f")
					b.ok(k.un, "f")
					wantLocks(t, fs, 0)
				}
			})
		}
	}
}

// POSIX and OFD locks are byte ranges: unlocking the middle of a lock splits
// it, neighbours do not conflict, F_GETLK reports the conflicting piece with
// its holder's PID (-1 through F_OFD_GETLK, as Linux shows OFD locks), and
// POSIX and OFD locks conflict with each other across mounts while flock is
// a family of its own. rounds rounds per mode.
func TestRanges(t *testing.T) {
	for _, mode := range []Mode{Shared, NoFlock} {
		t.Run(mode.String(), func(t *testing.T) {
			fs, _, a, b := openOnBoth(t, mode, "f")
			for range rounds {
				a.ok("lk f setlk w 0 100")
				a.ok("lk f setlk u 40 20") // A now holds [0,40) and [60,100)
				wantLocks(t, fs, 2)
				b.ok("lk f setlk w 40 20")
				b.fails(syscall.EAGAIN, "lk f setlk w 0 10")
				b.fails(syscall.EAGAIN, "lk f ofdsetlk w 99 1")
				b.ok("lk f setlk w 100 0") // to EOF, adjacent to A's
				if got, want := b.ok("lk f getlk w 0 10"), fmt.Sprintf("w 0 40 %d", a.pid); got != want {
					t.Errorf("F_GETLK through B: %q, want %q", got, want)
				}
				if got, want := b.ok("lk f ofdgetlk r 70 1"), "w 60 40 -1"; got != want {
					t.Errorf("F_OFD_GETLK through B: %q, want %q", got, want)
				}
				if got, want := a.ok("lk f getlk w 0 10"), "u 0 10 0"; got != want {
					t.Errorf("F_GETLK of A's own range: %q, want %q", got, want)
				}
				// Downgrading A's lock to a read lock lets B read-lock it.
				a.ok("lk f setlk r 0 40")
				b.ok("lk f setlk r 10 10")
				b.fails(syscall.EAGAIN, "lk f setlk w 10 10")
				if mode == Shared {
					// flock does not meet POSIX locks.
					b.ok("flock f ex nb")
					b.ok("flock f un")
				}
				a.ok("lk f setlk u 0 0")
				b.ok("lk f setlk u 0 0")
				wantLocks(t, fs, 0)
			}
		})
	}
}

// Lock owners are those of Linux: a process's POSIX locks are one owner
// whatever descriptor it uses, while OFD locks and flock belong to the open
// file, so a second open(2) by the same process conflicts with the first.
// rounds rounds per mode.
func TestOwners(t *testing.T) {
	for _, mode := range []Mode{Shared, NoFlock} {
		t.Run(mode.String(), func(t *testing.T) {
			fs, mp := mountFS(t, mode, 1)
			a := startClient(t, "A@host0")
			p := filepath.Join(mp[0], "pid")
			a.ok("open f1 %s rdwr,creat", p)
			a.ok("open f2 %s rdwr", p)
			for range rounds {
				a.ok("lk f1 setlk w 0 0")
				a.ok("lk f2 setlk w 0 0") // the same owner: replaces it
				wantLocks(t, fs, 1)
				a.ok("lk f2 setlk u 0 0") // and unlocks it
				wantLocks(t, fs, 0)
				a.ok("lk f1 ofdsetlk w 0 0")
				a.fails(syscall.EAGAIN, "lk f2 ofdsetlk w 0 0")
				a.fails(syscall.EAGAIN, "lk f2 setlk w 0 0")
				a.ok("lk f1 ofdsetlk u 0 0")
				if mode == Shared {
					a.ok("flock f1 ex nb")
					a.fails(syscall.EAGAIN, "flock f2 sh nb")
					a.ok("flock f1 sh nb") // conversion in place
					a.ok("flock f2 sh nb")
					a.ok("flock f1 un")
					a.ok("flock f2 un")
				}
				wantLocks(t, fs, 0)
			}
		})
	}
}

// A process's POSIX locks go when it closes any descriptor of the file, at
// once (FLUSH is synchronous), but not when it closes another file; OFD
// locks and flock belong to the open file and go with its last close.
// rounds rounds per mode and kind.
func TestCloseDropsLocks(t *testing.T) {
	for _, mode := range []Mode{Shared, NoFlock} {
		for _, k := range tableKinds(mode) {
			t.Run(mode.String()+"/"+k.name, func(t *testing.T) {
				fs, mp, a, b := openOnBoth(t, mode, "pid")
				pa := filepath.Join(mp[0], "pid")
				for range rounds {
					a.ok("open f2 %s rdonly", pa)
					a.ok("open other %s rdwr,creat", filepath.Join(mp[0], "other"))
					a.ok(k.try, "f")
					a.ok("close other")
					b.fails(syscall.EAGAIN, k.try, "f")
					a.ok("close f2")
					if k == posixKind {
						// Freed during close(2): no waiting.
						b.ok(k.try, "f")
						b.ok(k.un, "f")
						a.ok("close f")
					} else {
						b.fails(syscall.EAGAIN, k.try, "f")
						a.ok("close f")
						testutil.Eventually(t, 5*time.Second, "lock free after the holder's last close", func() bool {
							if tryLock(t, b, k, "f") {
								b.ok(k.un, "f")
								return true
							}
							return false
						})
					}
					wantLocks(t, fs, 0)
					a.ok("open f %s rdwr", pa)
				}
			})
		}
	}
}

// SIGKILL of a holder frees its locks for a waiter on the other mount, and
// SIGKILL of a blocked waiter ends its wait (the kernel interrupts the
// request) without leaving a lock behind. rounds rounds per mode and kind,
// each with fresh processes.
func TestKillFreesLocks(t *testing.T) {
	for _, mode := range []Mode{Shared, NoFlock} {
		for _, k := range tableKinds(mode) {
			t.Run(mode.String()+"/"+k.name, func(t *testing.T) {
				fs, mp := mountFS(t, mode, 2)
				pa, pb := filepath.Join(mp[0], "pid"), filepath.Join(mp[1], "pid")
				if err := os.WriteFile(filepath.Join(fs.Backing(), "pid"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
				for range rounds {
					holder, waiter := startClient(t, "holder@host0"), startClient(t, "waiter@host1")
					holder.ok("open f %s rdwr", pa)
					holder.ok(k.try, "f")
					waiter.ok("open f %s rdwr", pb)
					waiter.send(k.wait, "f")
					waiter.quiet(blockFor, "blocking lock")
					holder.kill()
					if r := waiter.wait("blocking lock after the holder's death"); r != "ok" {
						t.Fatalf("waiter: %s", r)
					}
					wantLocks(t, fs, 1)

					// Now a waiter on host0 behind the one that holds it.
					doomed := startClient(t, "doomed@host0")
					doomed.ok("open f %s rdwr", pa)
					doomed.send(k.wait, "f")
					doomed.quiet(blockFor, "blocking lock")
					died := make(chan struct{})
					go func() {
						doomed.kill()
						close(died)
					}()
					select {
					case <-died:
						waiter.ok(k.un, "f")
					case <-time.After(5 * time.Second):
						// Stuck until the lock comes free: free it, to
						// end the test instead of hanging it.
						waiter.ok(k.un, "f")
						<-died
						t.Fatal("a SIGKILLed waiter stayed blocked until the lock came free")
					}
					wantLocks(t, fs, 0)
					waiter.kill()
				}
			})
		}
	}
}

// Without lock operations the kernel locks per mount: processes on two
// mounts both get every kind of lock (the lost mutual exclusion of NFS
// mounted nolock), processes on one mount still exclude each other, and the
// table stays empty. rounds rounds per kind.
func TestLocalOnly(t *testing.T) {
	for _, k := range []kind{flockKind, posixKind, ofdKind} {
		t.Run(k.name, func(t *testing.T) {
			fs, mp := mountFS(t, LocalOnly, 2)
			a, b, c := startClient(t, "A@host0"), startClient(t, "B@host1"), startClient(t, "C@host0")
			a.ok("open f %s rdwr,creat", filepath.Join(mp[0], "pid"))
			b.ok("open f %s rdwr", filepath.Join(mp[1], "pid"))
			c.ok("open f %s rdwr", filepath.Join(mp[0], "pid"))
			for range rounds {
				a.ok(k.try, "f")
				b.ok(k.try, "f") // other mount: no exclusion
				c.fails(syscall.EAGAIN, k.try, "f")
				wantLocks(t, fs, 0)
				a.ok(k.un, "f")
				c.ok(k.try, "f")
				c.ok(k.un, "f")
				b.ok(k.un, "f")
			}
		})
	}
}

// A NoFlock mount refuses flock, non-blocking or not, with the errno it is
// told (ENOSYS by default) and the kernel hands that errno to flock(2)
// unchanged; OFD and POSIX locks work and exclude across mounts meanwhile.
// rounds rounds per errno.
func TestNoFlock(t *testing.T) {
	fs, _, a, b := openOnBoth(t, NoFlock, "pid")
	for _, errno := range []syscall.Errno{DefaultFlockErrno, syscall.EOPNOTSUPP, syscall.ENOLCK, syscall.ENOSYS} {
		fs.SetFlockErrno(errno)
		for range rounds {
			for _, c := range []*client{a, b} {
				c.fails(errno, "flock f ex nb")
				c.fails(errno, "flock f sh nb")
				c.fails(errno, "flock f ex")
				c.fails(errno, "flock f un")
			}
			a.ok("lk f ofdsetlk w 0 0")
			b.fails(syscall.EAGAIN, "lk f ofdsetlk w 0 0")
			b.fails(syscall.EAGAIN, "lk f setlk w 0 0")
			a.fails(errno, "flock f ex nb") // still refused while holding an OFD lock
			a.ok("lk f ofdsetlk u 0 0")
			b.ok("lk f ofdsetlk w 0 0")
			b.ok("lk f ofdsetlk u 0 0")
			wantLocks(t, fs, 0)
		}
	}
}

// LoseLocks frees the lock for the other mount at once and turns the old
// holder's writes and fsyncs through the open file that held it into EIO,
// while its other open files, and the file once reopened, work. rounds
// rounds per mode and kind.
func TestLoseLocks(t *testing.T) {
	for _, mode := range []Mode{Shared, NoFlock} {
		for _, k := range tableKinds(mode) {
			t.Run(mode.String()+"/"+k.name, func(t *testing.T) {
				fs, mp := mountFS(t, mode, 2)
				a, b := startClient(t, "A@host0"), startClient(t, "B@host1")
				pa := filepath.Join(mp[0], "pid")
				a.ok("open log %s wronly,creat", filepath.Join(mp[0], "log"))
				b.ok("open f %s rdwr,creat", filepath.Join(mp[1], "pid"))
				for round := range rounds {
					a.ok("open f %s rdwr", pa)
					a.ok(k.try, "f")
					a.ok("pwrite f 0 held%d", round)
					a.ok("fsync f")
					if n := fs.LoseLocks(); n != 1 {
						t.Fatalf("LoseLocks dropped %d locks, want 1", n)
					}
					wantLocks(t, fs, 0)
					b.ok(k.try, "f")
					a.fails(syscall.EIO, "pwrite f 0 stale")
					a.fails(syscall.EIO, "write f stale")
					a.fails(syscall.EIO, "fsync f")
					a.fails(syscall.EAGAIN, k.try, "f") // B has it now
					a.ok("pwrite log 0 fine")           // another open file
					a.ok("fsync log")
					if got, want := b.ok("pread f 0 5"), fmt.Sprintf("%q", fmt.Sprintf("held%d", round)); got != want {
						t.Errorf("B reads %s, want %s: a write after the loss got through", got, want)
					}
					a.ok("close f")
					a.ok("open f %s rdwr", pa)
					a.ok("pwrite f 5 !") // a new open file is not poisoned
					a.ok("fsync f")
					a.ok("close f")
					b.ok(k.un, "f")
					wantLocks(t, fs, 0)
				}
			})
		}
	}
}

// openOnBoth mounts a filesystem in mode twice and starts a client on each
// mount ("host"), each with file name open as "f" (A creates it).
func openOnBoth(t *testing.T, mode Mode, name string) (fs *FS, mp []string, a, b *client) {
	t.Helper()
	fs, mp = mountFS(t, mode, 2)
	a, b = startClient(t, "A@host0"), startClient(t, "B@host1")
	a.ok("open f %s rdwr,creat", filepath.Join(mp[0], name))
	b.ok("open f %s rdwr", filepath.Join(mp[1], name))
	return fs, mp, a, b
}
