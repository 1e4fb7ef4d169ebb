package interlock

import (
	"fmt"
	"os"
	"sync"

	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
)

// self is the identity of the calling process, as a record states it.
type self struct {
	pid    int
	start  uint64
	bootID string
	pidNS  uint64
	host   string
}

// whoami says who the calling process is. The start time, boot ID and PID
// namespace are fixed by the kernel for the life of the process, so they
// are read once per process (see processIdentity); the hostname can
// change, and is asked every time.
func whoami() (self, error) {
	s, err := processIdentity(os.Getpid())
	if err != nil {
		return s, err
	}
	if s.host, err = os.Hostname(); err != nil {
		return s, fmt.Errorf("read hostname: %w", err)
	}
	return s, nil
}

// identity caches what readIdentity found for this process. It is keyed by
// PID, so a forked child (a new process, with its own start time) reads its
// own; a failed read is not cached.
var identity struct {
	sync.Mutex
	s  self
	ok bool
}

func processIdentity(pid int) (self, error) {
	identity.Lock()
	defer identity.Unlock()
	if identity.ok && identity.s.pid == pid {
		return identity.s, nil
	}
	s, err := readIdentity(pid)
	if err == nil {
		identity.s, identity.ok = s, true
	}
	return s, err
}

func readIdentity(pid int) (self, error) {
	s := self{pid: pid}
	var err error
	if s.start, err = proc.StartTime(pid); err != nil {
		return s, fmt.Errorf("read own start time: %w", err)
	}
	if s.bootID, err = proc.BootID(); err != nil {
		return s, err
	}
	if s.pidNS, err = proc.Namespace(pid, "pid"); err != nil {
		return s, fmt.Errorf("read own PID namespace: %w", err)
	}
	return s, nil
}

// sameBoot reports whether r was written on this host since its last boot, so
// that its PIDs and segment ids mean something here.
func (s self) sameBoot(r *pidfile.Record) bool {
	return r != nil && r.BootID == s.bootID
}
