package interlock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/dirlockd/dirlockd/internal/fault"
	"github.com/dirlockd/dirlockd/pidfile"
	"github.com/dirlockd/dirlockd/shm"
)

// Acquire takes the data directory dir, or says who has it.
//
// It fails with an error matching ErrHeld (*HeldError) while a live instance
// holds it, ErrOrphans (*OrphansError) while processes of a dead holder
// survive, ErrInvalid when the directory or pidfile is unfit, and
// ErrUnsupported when the filesystem takes no lock. With opts.Wait it retries
// a held directory until the wait or ctx runs out.
//
// A failed Acquire undoes its own steps and never modifies the record of the
// holder it found.
//
// A directory this process already holds, through another Lock, is refused
// at once with a *HeldError naming this process, whatever opts.Wait says,
// and without opening the pidfile again: closing a second descriptor of it
// would drop a POSIX lock (see pidfile's registry).
func Acquire(ctx context.Context, dir string, opts Options) (*Lock, error) {
	me, err := whoami()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	var f *pidfile.File
	for {
		if f, err = pidfile.Open(dir, opts.pidfileOptions()); err != nil {
			return nil, heldHere(err, me)
		}
		opts.step(fault.Opened)
		if err := checkStorage(f, opts); err != nil {
			leaveFailed(f, opts, me, err)
			f.Close()
			return nil, err
		}
		err = lockWaiting(ctx, f, opts, me, start)
		if err == nil {
			break
		}
		f.Close()
		if !errors.Is(err, pidfile.ErrReplaced) {
			return nil, err
		}
		// The waiter's lock was granted on an inode the path no longer
		// names: wait for the one that starters now lock.
	}
	opts.step(fault.Locked)
	l, err := claimLocked(ctx, f, opts, me)
	if err != nil {
		leaveFailed(f, opts, me, err)
		f.Close()
		return nil, err
	}
	return l, nil
}

// startFailedKey is the record key in which a start that created the
// pidfile and then failed says why.
const startFailedKey = "start_failed"

// leaveFailed leaves a pidfile that this start created, and found nothing
// in, with a record that says the start failed and why, instead of empty:
// an empty pidfile tells the next start that a start died before writing
// its record, which is not what happened. The record is a stop without
// stopped_at, which never skips the next start's survivor search (see
// cleanStop), and nothing is written unless this process holds the lock
// and the file is still empty.
func leaveFailed(f *pidfile.File, opts Options, me self, cause error) {
	if !f.Created() || f.TryLock(opts.LockMethod) != nil {
		return
	}
	if _, raw, err := f.ReadRecord(); err != nil && !errors.Is(err, pidfile.ErrMalformed) || len(raw) > 0 {
		return
	}
	why := strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, cause.Error())
	f.Write(&pidfile.Record{
		PID:        me.pid,
		DataDir:    f.Dir(),
		StartTime:  time.Now().UTC(),
		BootID:     me.bootID,
		Hostname:   me.host,
		PIDNS:      me.pidNS,
		PIDStart:   me.start,
		ShmID:      -1,
		LockMethod: f.Method(),
		Status:     pidfile.Stopped,
		Version:    pidfile.Version,
		Extra:      map[string]string{startFailedKey: why},
	})
}

// checkStorage refuses a shared filesystem whose mount options keep the lock
// method's locks on this host, unless opts allow it.
func checkStorage(f *pidfile.File, opts Options) error {
	fs, err := f.Filesystem()
	if err != nil {
		return fmt.Errorf("%s: %w", f.Dir(), err)
	}
	if why := fs.LocalOnly(opts.LockMethod); why != "" && !opts.AllowLocalLocks {
		return &LocalLocksError{Dir: f.Dir(), Filesystem: fs, Reason: why}
	}
	return nil
}

// heldHere turns the refusal of a pidfile this process holds itself into the
// *HeldError that names this process; other errors pass unchanged.
func heldHere(err error, me self) error {
	var lh *pidfile.LockedHereError
	if !errors.As(err, &lh) {
		return err
	}
	he := &HeldError{Dir: filepath.Dir(lh.Path), PID: me.pid, Host: me.host, Holders: []int{me.pid}, Record: lh.Record}
	if r := lh.Record; r != nil {
		he.Started, he.Status = r.StartTime, r.Status
	}
	return he
}

// claimLocked makes the directory ours once its lock is held (steps 3 to 7
// of docs/design.md): it reads the previous record, watches the heartbeat of
// a holder on another host, looks for survivors and removes the unattached
// segments of the directory, creates this acquisition's segment, and writes
// the new record. Not to be confused with a Takeover, which is what step 4
// reports when the previous holder was on another host.
func claimLocked(ctx context.Context, f *pidfile.File, opts Options, me self) (*Lock, error) {
	rec, raw, recErr := f.ReadRecord()
	if recErr != nil && !errors.Is(recErr, pidfile.ErrMalformed) {
		return nil, recErr
	}
	var prev *Previous
	switch {
	case len(raw) > 0:
		prev = &Previous{Record: rec, Raw: raw, Err: recErr}
	case !f.Created():
		prev = &Previous{Err: errEmpty}
	}
	opts.step(fault.ReadPrevious)

	var takeover *Takeover
	if fs, _ := f.Filesystem(); me.remoteHolder(fs, rec) {
		takeover = &Takeover{Host: rec.Hostname, PID: rec.PID}
		takeover.Heartbeat, _ = heartbeat(rec)
		if d := opts.takeoverWatch(fs, rec, me, time.Now()); d > 0 {
			if opts.TakeoverProof != nil {
				takeover.Proof = opts.TakeoverProof(rec)
			}
			if takeover.Proof == "" {
				if err := watchHeartbeat(ctx, f, rec, raw, d); err != nil {
					return nil, err
				}
				takeover.Watched = d
			}
		}
	}

	var dirID shm.Identity
	dirID.Dev, dirID.Ino = f.DirID()
	changed, err := f.Changed()
	if err != nil {
		return nil, err
	}
	p := newPlace(f.Dir(), f.Path(), dirID, f.DirOwner(), f.Owner())
	if !cleanStop(rec, changed, me) {
		if _, err := witness(p, rec, me, true, nil); err != nil {
			return nil, err
		}
	}
	opts.step(fault.Witnessed)

	token, err := newToken()
	if err != nil {
		return nil, err
	}
	hdr := shm.Header{CreatorPID: me.pid, CreatorStart: me.start, Created: time.Now()}
	copy(hdr.Token[:], token)
	if b, err := hex.DecodeString(strings.ReplaceAll(me.bootID, "-", "")); err == nil {
		copy(hdr.BootID[:], b)
	}
	seg, err := shm.Create(dirID, p.owners, hdr)
	if err != nil {
		var ae *shm.AttachedError
		if errors.As(err, &ae) {
			return nil, &OrphansError{Dir: f.Dir(), Previous: rec, Orphans: segmentOrphans(ae.Analysis)}
		}
		return nil, fmt.Errorf("create shared memory segment for %s: %w", f.Dir(), err)
	}
	opts.step(fault.SegmentCreated)

	l := &Lock{file: f, seg: seg, dirID: dirID, owners: p.owners, hdr: hdr, prev: prev, takeover: takeover, opts: opts}
	l.rec = pidfile.Record{
		PID:        me.pid,
		DataDir:    f.Dir(),
		StartTime:  hdr.Created.UTC(),
		BootID:     me.bootID,
		Hostname:   me.host,
		PIDNS:      me.pidNS,
		PIDStart:   me.start,
		ShmKey:     seg.Key,
		ShmID:      seg.ID,
		LockMethod: f.Method(),
		Status:     pidfile.Starting,
		Token:      hex.EncodeToString(token),
		Version:    pidfile.Version,
	}
	if err := f.Write(&l.rec); err != nil {
		seg.Detach()
		seg.Remove()
		return nil, err
	}
	opts.step(fault.RecordWritten)
	return l, nil
}

func newToken() ([]byte, error) {
	t := make([]byte, 16)
	if _, err := rand.Read(t); err != nil {
		return nil, fmt.Errorf("make acquisition token: %w", err)
	}
	return t, nil
}
