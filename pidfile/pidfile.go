// Package pidfile claims and reads the lock file that guards a data
// directory.
//
// The pidfile lives inside the data directory. Whoever holds a kernel lock on
// it (flock, or an fcntl lock where flock is not supported) holds the
// directory; the PID written in it is a hint for humans and tools, never the
// proof. The file is never unlinked: a starter blocked on the lock of a file
// that is then unlinked would hold the lock of a name nobody else can find,
// and a third process would create a new file and lock that one too. Content
// is rewritten in place instead, and marked "stopped" on a clean release.
//
// A read yields one of three outcomes, as in Neon's pid_file module: the file
// does not exist; nobody holds it (the record is stale); or somebody holds it.
// Open and File.TryLock take the lock and hand the caller the old record
// under it (File.ReadRecord); Read only looks, and on a local filesystem asks
// the kernel who holds the lock instead of taking it, so that a boot script's
// check cannot make a concurrent start fail.
package pidfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/dirlockd/dirlockd/internal/users"
)

// DefaultName is the pidfile's name inside the data directory.
const DefaultName = "dirlockd.pid"

// ErrInvalid is wrapped by every error that says the data directory or the
// pidfile is unfit to carry the interlock (wrong owner, wrong mode, wrong
// type, unreadable). The error says which and how to fix it.
var ErrInvalid = errors.New("invalid data directory or pidfile")

// InvalidError describes why a data directory or pidfile was refused.
type InvalidError struct {
	Path    string // the offending path
	Problem string // what is wrong
	Fix     string // what to do about it, if known
	Err     error  // underlying cause, if any
}

func (e *InvalidError) Error() string {
	s := e.Path + ": " + e.Problem
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	if e.Fix != "" {
		s += " (" + e.Fix + ")"
	}
	return s
}

func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }
func (e *InvalidError) Unwrap() error        { return e.Err }

// Options select the pidfile and how it is locked.
type Options struct {
	Name   string // file name inside the data directory; DefaultName if empty
	Method Method // Auto if zero
	// NoSync skips fsync on write: a crash can then leave an empty
	// record. It is exported only because interlock's benchmarks reach it
	// through interlock (whose own knob is test-only); never set it
	// otherwise.
	NoSync bool
}

func (o Options) name() string {
	if o.Name == "" {
		return DefaultName
	}
	return o.Name
}

// Use says what a caller means to do with a data directory, which decides
// who may.
type Use int

const (
	// ForStart: the caller will hold the directory and write its pidfile,
	// so it must own the directory: a holder of somebody else's
	// directory would write files there that its owner cannot replace.
	ForStart Use = iota
	// ForLook: the caller only reads the pidfile and tests its lock
	// (check, status, wait). Root and the directory's owner may look at
	// any directory they can read: root is who runs boot scripts and
	// monitoring.
	ForLook
)

// CheckDir verifies that dir can carry the interlock for use: an existing
// directory, not writable by group or others (anyone who can write there can
// replace the pidfile), owned by the effective uid (ForStart) or by the
// effective uid or looked at by root (ForLook), on a filesystem that keeps
// files, and reached through no directory that others may change. It
// returns the cleaned absolute path and the directory's owner.
func CheckDir(dir string, use Use) (abs string, owner uint32, err error) {
	d, err := openDir(dir, use)
	if err != nil {
		return "", 0, err
	}
	d.close()
	return d.abs, d.owner(), nil
}

// checkOwner applies use's ownership rule to a data directory owned by
// owner. Its advice never suggests giving the directory to the caller: a
// server's data directory belongs to the server's user (PostgreSQL refuses
// to start in one it does not own), so the fix is to run as that user.
func checkOwner(abs string, owner uint32, use Use) error {
	euid := uint32(os.Geteuid())
	if owner == euid || use == ForLook && euid == 0 {
		return nil
	}
	if use == ForLook {
		fix := "run as root"
		if owner != 0 {
			fix += " or as " + users.Login(owner)
		}
		return &InvalidError{Path: abs,
			Problem: fmt.Sprintf("data directory is owned by %s; only its owner and root may inspect it, and dirlockd runs as %s",
				users.Name(owner), users.Name(euid)),
			Fix: fix}
	}
	return &InvalidError{Path: abs,
		Problem: fmt.Sprintf("data directory is owned by %s; only its owner may hold it, and dirlockd runs as %s",
			users.Name(owner), users.Name(euid)),
		Fix: fmt.Sprintf("run dirlockd as %s, for example: runuser -u %s -- dirlockd ...", users.Login(owner), users.Login(owner))}
}

// openPidfileDir opens and checks the data directory dir for use, and
// checks the pidfile's name. It returns the directory, open, and the
// pidfile's path.
func openPidfileDir(dir string, use Use, opts Options) (*dataDir, string, error) {
	d, err := openDir(dir, use)
	if err != nil {
		return nil, "", err
	}
	if err := checkName(d.abs, opts.name()); err != nil {
		d.close()
		return nil, "", err
	}
	return d, filepath.Join(d.abs, opts.name()), nil
}

// checkName refuses a pidfile name that is not a plain name inside the data
// directory: "../x" or "a/b" would put the lock outside the directory the
// checks were made on.
func checkName(dir, name string) error {
	if name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return &InvalidError{Path: filepath.Join(dir, name),
			Problem: fmt.Sprintf("pidfile name %q is not a file name inside the data directory", name),
			Fix:     "name a file of the data directory, without /"}
	}
	return nil
}
