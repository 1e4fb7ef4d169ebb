// Package interlock guarantees that at most one process tree works in a data
// directory at a time.
//
// Two kernel facts witness a holder: a lock on the pidfile inside the
// directory (package pidfile), and the attach count of a SysV segment whose
// header names the directory (package shm). A third, the acquisition token in
// the environment of the processes a holder starts, finds servers that closed
// every inherited descriptor and exec'd away their attachment. Acquire takes
// the directory only when all of them agree that nobody is left; the PID
// written in the pidfile is never trusted on its own.
//
// The decision procedure, its inputs and its outcomes are laid out in
// docs/design.md.
package interlock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
	"github.com/dirlockd/dirlockd/shm"
)

// TokenEnv is the environment variable through which a holder's children
// carry its acquisition token; Acquire refuses while any process has the
// previous holder's token in it.
const TokenEnv = "DIRLOCKD_TOKEN"

// PidfileEnv is the environment variable through which a holder's children
// carry the pidfile's path. It witnesses them even when the record that
// named their token has been lost (emptied, deleted, torn by a crash).
const PidfileEnv = "DIRLOCKD_PIDFILE"

// DefaultSettle is how long a busy lock is watched before the busy-ness is
// blamed on orphans: a starter holds the lock for a few milliseconds before
// its record names it, and an inspector may be probing the lock.
const DefaultSettle = 2 * time.Second

// Options tune Acquire and Inspect. The zero value is ready to use.
type Options struct {
	// Pidfile is the pidfile's name inside the data directory
	// (pidfile.DefaultName if empty).
	Pidfile string
	// LockMethod forces a lock method; Auto falls back from flock to OFD
	// to POSIX locks as the filesystem demands.
	LockMethod pidfile.Method
	// Wait is how long Acquire waits for a held directory: 0 fails at
	// once, a negative value waits until ctx is done.
	Wait time.Duration
	// Recheck is how often a long-running holder calls (*Lock).Check and
	// (*Lock).Heartbeat; nothing here runs them for it. Heartbeat records
	// it in the record as the holder's heartbeat interval, and Acquire
	// derives its takeover watch from it when TakeoverAfter is zero.
	Recheck time.Duration
	// TakeoverAfter is how long Acquire watches the heartbeat of a holder
	// on another host before taking over from it when the lock is free (a
	// heartbeat that moves means the storage's locks are broken). Zero
	// means three times the longer of Recheck and the holder's own
	// heartbeat interval, or DefaultTakeoverAfter. It is never shorter than
	// twice the holder's interval.
	TakeoverAfter time.Duration
	// TakeoverProof, if set, is asked before that watch: an answer other
	// than "" says why the record's holder provably holds nothing any
	// more (dirlockd run --etcd: the lease the record names has ended,
	// and its holder dies before its lease can end), and the watch is
	// skipped. Takeover.Proof carries the answer.
	TakeoverProof func(rec *pidfile.Record) string
	// AllowLocalLocks lets Acquire use a shared filesystem whose mount
	// options keep locks on this host (NFS nolock or local_lock=, CIFS
	// nobrl). Set it only when no other host mounts the filesystem.
	AllowLocalLocks bool
	// ListHolders makes Inspect name every process that holds the lock
	// of a held directory (the wrapper and the server sharing its
	// descriptor), which costs a look at every process's descriptors.
	// Without it a recorded holder that proves itself is named alone.
	ListHolders bool
	// NoSync skips fsync of the pidfile. It exists for benchmarks; a crash
	// can then leave an empty record.
	NoSync bool

	settle time.Duration // DefaultSettle if zero
	hook   func(Step)    // test fault injection
}

func (o Options) pidfileOptions() pidfile.Options {
	return pidfile.Options{Name: o.Pidfile, Method: o.LockMethod, NoSync: o.NoSync}
}

func (o Options) settleTime() time.Duration {
	if o.settle > 0 {
		return o.settle
	}
	return DefaultSettle
}

// Step names a point in Acquire and Release, for fault injection in tests.
type Step int

// The steps, in order.
const (
	StepOpened          Step = iota + 1 // data directory checked, pidfile open
	StepLocked                          // file lock taken
	StepReadPrevious                    // old record read
	StepWitnessed                       // old segments analysed, stale ones removed
	StepSegmentCreated                  // new segment created, attached, header written
	StepRecordWritten                   // new record written and synced
	StepReleaseMarked                   // Release: record says stopped
	StepReleaseDetached                 // Release: segment detached
	StepReleaseRemoved                  // Release: segment removed
	StepReleaseUnlocked                 // Release: lock released
)

// FaultEnv names the variable through which a build made with -tags
// faultinject is told the Step at which to kill itself with SIGKILL (its
// number). Release builds ignore it: they carry no fault hook at all.
const FaultEnv = "DIRLOCKD_FAULT"

func (o Options) step(s Step) {
	faultPoint(s)
	if o.hook != nil {
		o.hook(s)
	}
}

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

// Lock is a held data directory. Keep it reachable for as long as the
// directory is held: it owns the locked descriptor and the attached segment.
type Lock struct {
	mu       sync.Mutex
	file     *pidfile.File
	seg      *shm.Segment
	dirID    shm.Identity // the data directory, as segment headers name it
	hdr      shm.Header   // the header of this acquisition's segments
	rec      pidfile.Record
	prev     *Previous
	takeover *Takeover
	opts     Options
	released bool
}

// Previous describes what the pidfile said when Acquire took the lock.
type Previous struct {
	Record *pidfile.Record // the previous holder's record, if readable
	Raw    []byte          // the content as found
	Err    error           // why Record is nil although Raw is not empty
}

// errEmpty describes a pidfile found empty: a start died between creating it
// and writing its first record.
var errEmpty = fmt.Errorf("%w: empty: a start died before writing its record", pidfile.ErrMalformed)

// Clean reports whether the previous holder released the directory itself.
func (p *Previous) Clean() bool {
	return p.Record != nil && p.Record.Status == pidfile.Stopped
}

func (p *Previous) String() string {
	switch {
	case p.Record == nil:
		return fmt.Sprintf("the pidfile held no readable record (%v); its previous holder is unknown and left no survivors", p.Err)
	case p.Clean():
		return fmt.Sprintf("previous holder PID %d (started %s) shut down cleanly",
			p.Record.PID, p.Record.StartTime.Local().Format(time.RFC3339))
	}
	return fmt.Sprintf("previous holder PID %d (started %s) did not shut down cleanly",
		p.Record.PID, p.Record.StartTime.Local().Format(time.RFC3339))
}

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
		opts.step(StepOpened)
		if err := checkStorage(f, opts); err != nil {
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
	opts.step(StepLocked)
	l, err := takeOver(ctx, f, opts, me)
	if err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
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

// lockWaiting takes f's lock, retrying while it is busy for as long as opts
// and ctx allow (counted from start), and at least until a busy lock can be
// blamed on somebody.
//
// Where the kernel can queue a waiter (flock and OFD locks on a local
// filesystem) a waiter blocks in it (pidfile.File.LockWait), so that the
// release hands the lock straight to a waiter instead of to the releaser's
// next attempt. Elsewhere (POSIX locks, shared storage) it sleeps until the
// pidfile is closed by somebody (pidfile.ReleaseWatch: the moment a
// holder's lock goes) and tries again then, or after a fallback interval,
// for the releases a watch cannot see (an explicit unlock; a holder on
// another host of a shared filesystem, where it polls as before). A grant
// on a pidfile that was replaced meanwhile fails with pidfile.ErrReplaced:
// the caller opens the pidfile again.
//
// Saying who holds a busy lock can cost a scan of every process's
// descriptors, so a caller that waits asks only when it is about to give up:
// dozens of waiters classifying on every retry would starve the very holder
// they wait for.
func lockWaiting(ctx context.Context, f *pidfile.File, opts Options, me self, start time.Time) error {
	dev, ino := f.ID()
	fallback := 100 * time.Millisecond
	if fs, err := f.Filesystem(); err != nil || fs.Shared() {
		fallback = 0 // jittered backoff below
	}
	kernelWait := true
	retry := backoff{d: time.Millisecond, max: 10 * time.Millisecond}
	var watch *pidfile.ReleaseWatch
	defer func() {
		if watch != nil {
			watch.Close()
		}
	}()
	for {
		err := f.TryLock(opts.LockMethod)
		if err == nil || !errors.Is(err, pidfile.ErrLocked) {
			return err
		}
		if errors.As(err, new(*pidfile.LockedHereError)) {
			return heldHere(err, me)
		}
		waited := time.Since(start)
		if opts.Wait >= 0 && waited >= opts.Wait || ctx.Err() != nil {
			rec, _, _ := f.ReadRecord()
			verdict, final := judgeBusy(f.Dir(), rec, func(pid int) bool { return proc.HoldsLock(pid, dev, ino) }, f.Holders, me)
			if ctx.Err() != nil {
				return fmt.Errorf("%w (gave up waiting: %w)", verdict, ctx.Err())
			}
			if final || waited >= opts.settleTime() {
				return verdict
			}
		}
		// Block in the kernel only while the caller's wait lasts. A
		// verdict that was not final yet (the settle time) is asked
		// again after every retry, as the holder's record may name it
		// any moment.
		if waiting := opts.Wait < 0 || waited < opts.Wait; kernelWait && waiting {
			wctx, cancel := ctx, context.CancelFunc(func() {})
			if opts.Wait > 0 {
				wctx, cancel = context.WithTimeout(ctx, opts.Wait-waited)
			}
			err := f.LockWait(wctx, opts.LockMethod)
			cancel()
			switch {
			case err == nil, errors.Is(err, pidfile.ErrReplaced):
				return err
			case errors.Is(err, pidfile.ErrNoKernelWait), errors.Is(err, pidfile.ErrLocked):
				// Not for this lock, or the lock of the other family
				// is what is busy: the kernel cannot queue us on it.
				kernelWait = false
			case wctx.Err() == nil:
				return err
			}
			continue // try once more, then judge
		}
		if watch == nil && fallback > 0 {
			// Watch first, then try again at once: a release between
			// the failed attempt and the watch is not missed.
			if watch, err = f.WatchRelease(); err == nil {
				continue
			}
			watch, fallback = nil, 0
		}
		d := fallback
		if d == 0 {
			// Jittered, and short at most: without a watch a waiter
			// only notices a release when it tries again.
			d = retry.next()
		}
		if opts.Wait > 0 && waited < opts.Wait {
			d = min(d, opts.Wait-waited) // judge when the wait runs out
		}
		if watch != nil {
			watch.Wait(ctx, d)
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
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

// judgeBusy says who holds a busy lock. final is false when the answer may be
// transient: a starter that has the lock but has not written its record yet
// looks like an orphan, and an inspector's probe like an invisible holder.
//
// holds answers whether a given process holds the lock, cheaply; holders
// lists every holder, at the cost of a scan of all processes, needed only
// when the recorded holder turns out not to be one.
func judgeBusy(dir string, rec *pidfile.Record, holds func(pid int) bool,
	holders func() ([]int, error), me self) (verdict error, final bool) {
	held := &HeldError{Dir: dir, Record: rec}
	if rec != nil {
		held.PID, held.Host, held.Started, held.Status = rec.PID, rec.Hostname, rec.StartTime, rec.Status
		if recordedHolder(rec, me, holds) {
			held.Holders = []int{rec.PID}
			return held, true
		}
	}
	hs, err := holders()
	if err != nil {
		return fmt.Errorf("find the holders of %s: %w", dir, err), true
	}
	held.Holders = hs
	if len(hs) == 0 {
		// Out of sight. Trust a record that plausibly names a holder we
		// cannot see; anything else may be a passing probe.
		remote := rec != nil && (!me.sameBoot(rec) || rec.PIDNS != me.pidNS)
		return held, remote && rec.Status != pidfile.Stopped
	}
	if me.sameBoot(rec) && rec.PIDNS != me.pidNS {
		for _, h := range hs {
			// A holder in a PID namespace below ours shows another PID
			// here; its start time is the same in every namespace.
			if proc.Alive(h, rec.PIDStart) {
				return held, true
			}
		}
	}
	if rec == nil {
		return held, false
	}
	return &OrphansError{Dir: dir, Previous: rec, Orphans: orphansOf(hs, WitnessLock)}, false
}

// recordedHolder reports whether the process rec names, seen from our own
// PID namespace, is alive with the recorded start time and holds the lock
// (holds answers that, cheaply: from its own descriptors).
func recordedHolder(rec *pidfile.Record, me self, holds func(pid int) bool) bool {
	return rec != nil && me.sameBoot(rec) && rec.PIDNS == me.pidNS && holds(rec.PID) && proc.Alive(rec.PID, rec.PIDStart)
}

// takeOver runs steps 3 to 7 with the lock held.
func takeOver(ctx context.Context, f *pidfile.File, opts Options, me self) (*Lock, error) {
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
	opts.step(StepReadPrevious)

	// On a local filesystem the kernel's lock is the whole truth; on a
	// shared one, a record of another host is a holder we cannot see.
	var takeover *Takeover
	if fs, _ := f.Filesystem(); fs.Shared() && me.otherHost(rec) && rec.Status != pidfile.Stopped {
		takeover = &Takeover{Host: rec.Hostname, PID: rec.PID}
		takeover.Heartbeat, _ = heartbeat(rec)
		if d := opts.takeoverWatch(rec, me, time.Now()); d > 0 {
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

	dirID, err := shm.DirIdentity(f.Dir())
	if err != nil {
		return nil, err
	}
	changed, err := f.Changed()
	if err != nil {
		return nil, err
	}
	if !cleanStop(rec, changed, me) {
		if _, err := witness(f.Dir(), f.Path(), dirID, rec, me, true, nil); err != nil {
			return nil, err
		}
	}
	opts.step(StepWitnessed)

	token, err := newToken()
	if err != nil {
		return nil, err
	}
	hdr := shm.Header{CreatorPID: me.pid, CreatorStart: me.start, Created: time.Now()}
	copy(hdr.Token[:], token)
	if b, err := hex.DecodeString(strings.ReplaceAll(me.bootID, "-", "")); err == nil {
		copy(hdr.BootID[:], b)
	}
	seg, err := shm.Create(dirID, hdr)
	if err != nil {
		var ae *shm.AttachedError
		if errors.As(err, &ae) {
			return nil, &OrphansError{Dir: f.Dir(), Previous: rec, Orphans: segmentOrphans(ae.Analysis)}
		}
		return nil, fmt.Errorf("create shared memory segment for %s: %w", f.Dir(), err)
	}
	opts.step(StepSegmentCreated)

	l := &Lock{file: f, seg: seg, dirID: dirID, hdr: hdr, prev: prev, takeover: takeover, opts: opts}
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
	opts.step(StepRecordWritten)
	return l, nil
}

// witness looks for survivors of the holder that wrote rec (which may be nil:
// a missing or corrupt record hides nothing from the segment scan). With
// reclaim set it removes the unattached segments it finds. found is a pass
// over /proc that already looked for survivorEntries (nil: witness makes its
// own). It returns the segments of the directory it found, and an
// *OrphansError when anybody is left.
func witness(dir, path string, dirID shm.Identity, rec *pidfile.Record, me self, reclaim bool, found *proc.Found) ([]shm.Analysis, error) {
	var ids []int
	if me.sameBoot(rec) {
		ids = append(ids, rec.ShmID)
	}
	segs, err := shm.Scan(dirID, reclaim, ids...)
	if err != nil {
		return nil, fmt.Errorf("analyse shared memory of %s (refusing to guess): %w", dir, err)
	}
	var orphans []Orphan
	for _, a := range segs {
		if a.State == shm.Attached {
			orphans = append(orphans, segmentOrphans(a)...)
		}
	}
	envs := survivorEntries(path, rec, me)
	if found == nil {
		if found, err = proc.Search(proc.Query{Env: envs}); err != nil {
			return segs, err
		}
	}
	witnesses := map[int]Witness{}
	for i, e := range envs {
		for _, pid := range found.Env[e] {
			witnesses[pid] = WitnessStarted
			if i > 0 { // the token names the holder: the stronger witness
				witnesses[pid] = WitnessToken
			}
		}
	}
	for _, pid := range slices.Sorted(maps.Keys(witnesses)) {
		if pid == me.pid {
			continue
		}
		orphans = append(orphans, Orphan{PID: pid, Cmdline: proc.Cmdline(pid), Witness: witnesses[pid]})
	}
	if len(orphans) > 0 {
		return segs, &OrphansError{Dir: dir, Previous: rec, Orphans: orphans}
	}
	return segs, nil
}

// survivorEntries are the environment entries that mark a survivor of the
// holder that wrote rec: this pidfile's path in DIRLOCKD_PIDFILE, and, for
// a record of this boot, its token. The token, when there is one, comes
// last.
func survivorEntries(path string, rec *pidfile.Record, me self) []string {
	envs := []string{PidfileEnv + "=" + path}
	if me.sameBoot(rec) && rec.Token != "" {
		envs = append(envs, TokenEnv+"="+rec.Token)
	}
	return envs
}

func segmentOrphans(a shm.Analysis) []Orphan {
	o := orphansOf(a.PIDs, WitnessSegment)
	for range a.Nattch - len(a.PIDs) {
		o = append(o, Orphan{Witness: WitnessSegment})
	}
	return o
}

func newToken() ([]byte, error) {
	t := make([]byte, 16)
	if _, err := rand.Read(t); err != nil {
		return nil, fmt.Errorf("make acquisition token: %w", err)
	}
	return t, nil
}

// Record returns a copy of the holder's current record.
func (l *Lock) Record() pidfile.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.rec
	r.Extra = maps.Clone(l.rec.Extra)
	return r
}

// Previous describes the record found when the lock was taken; nil only
// when Acquire created the pidfile. An existing pidfile that was empty is
// reported too (Record nil, Err saying it was empty: a start died before its
// first record), as Inspect reports it stale. Callers should log a Previous
// that is not Clean.
func (l *Lock) Previous() *Previous { return l.prev }

// File returns the locked pidfile, to pass to a child that should keep the
// lock (see pidfile.File.OS).
func (l *Lock) File() *pidfile.File { return l.file }

// Segment returns the holder's attached SysV segment.
func (l *Lock) Segment() *shm.Segment { return l.seg }

// Update changes the record with fn and rewrites it, fsynced only on shared
// storage (see pidfile.File.Amend). On error the record in memory is left as
// it was.
func (l *Lock) Update(fn func(*pidfile.Record)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return errors.New("update pidfile: lock already released")
	}
	r := l.rec
	r.Extra = maps.Clone(l.rec.Extra)
	fn(&r)
	return l.write(r)
}

// write amends the record to r and remembers it; l.mu must be held.
func (l *Lock) write(r pidfile.Record) error {
	if err := l.file.Amend(&r); err != nil {
		return err
	}
	l.rec = r
	return nil
}

// Check verifies that the holder still holds what it acquired, as
// PostgreSQL's RecheckDataDirLockFile does, and more: the pidfile's path still
// names the locked file (not deleted, not replaced) and no other name shares
// its inode, the kernel still lists the lock on the holder's descriptor (a
// POSIX lock vanishes when the process closes any other descriptor of the
// file), the record in it still names this acquisition, and the segment
// still exists, not marked for removal, with this acquisition's header. It
// writes nothing. Long-running holders call it every Options.Recheck.
//
// A lost pidfile, record or lock matches ErrLost (*LostError), and is
// checked first. When only the segment is gone (ipcrm, systemd-logind's
// RemoveIPC=yes) the error matches ErrSegmentLost (*SegmentLostError) and
// not ErrLost: the directory is still held, and RenewSegment gives it a new
// segment.
func (l *Lock) Check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	lost := func(reason string, err error) error {
		return &LostError{Dir: l.rec.DataDir, Reason: reason, Err: err}
	}
	if l.released {
		return lost("released", nil)
	}
	path := l.file.Path()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return lost("pidfile "+path+" cannot be found", err)
	}
	if dev, ino := l.file.ID(); st.Dev != dev || st.Ino != ino {
		return lost(fmt.Sprintf("pidfile %s was replaced by another file (inode %d, locked inode %d)", path, st.Ino, ino), nil)
	}
	if st.Nlink != 1 {
		return lost(fmt.Sprintf("pidfile %s now has %d links: another name shares its inode, so it is no longer provably ours "+
			"(remove the extra link: find / -xdev -inum %d)", path, st.Nlink, st.Ino), nil)
	}
	if err := l.file.CheckLock(); err != nil {
		return lost("the kernel no longer holds our lock on the pidfile", err)
	}
	rec, _, err := l.file.ReadRecord()
	switch {
	case err != nil:
		return lost("pidfile "+path+" no longer holds our record", err)
	case rec == nil:
		return lost("pidfile "+path+" was emptied", nil)
	case rec.Token != l.rec.Token || rec.PID != l.rec.PID:
		return lost(fmt.Sprintf("pidfile %s was rewritten (it names PID %d, token %s)", path, rec.PID, rec.Token), nil)
	}
	segLost := func(what string, err error) error {
		return &SegmentLostError{Dir: l.rec.DataDir, ID: l.seg.ID, What: what, Err: err}
	}
	d, err := shm.Stat(l.seg.ID)
	if err != nil {
		return segLost(SegmentRemoved, err)
	}
	if shm.MarkedForRemoval(d) || int(d.Perm.Key) != l.seg.Key {
		return segLost(SegmentRemoved, nil)
	}
	if h := l.seg.Header(); h.Magic != shm.Magic || h.Dir != l.dirID || hex.EncodeToString(h.Token[:]) != l.rec.Token {
		return segLost(SegmentOverwritten, nil)
	}
	return nil
}

// RenewSegment gives a holder whose segment was lost (Check reports
// ErrSegmentLost) a new one: the old one is removed if it still exists and
// this process created it, a new one is created for the directory with this
// acquisition's header (the same token, so the DIRLOCKD_TOKEN witnesses still
// match), the old one detached, and the record rewritten with the new
// shm_key and shm_id. Check then passes again. Processes that attached to the
// old segment stay attached to it, and no longer show in the new one's
// attach count.
//
// On error the old segment stays attached, and Check keeps reporting it.
func (l *Lock) RenewSegment() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return errors.New("renew segment: lock already released")
	}
	old := l.seg
	// Its header no longer proves it ours, but the kernel's creator PID
	// does: a segment of our id and key that this very process created.
	if d, err := shm.Stat(old.ID); err == nil && !shm.MarkedForRemoval(d) &&
		int(d.Perm.Key) == old.Key && int(d.Cpid) == os.Getpid() {
		if err := old.Remove(); err != nil {
			return fmt.Errorf("renew the segment of %s: %w", l.rec.DataDir, err)
		}
	}
	hdr := l.hdr
	hdr.Created = time.Now()
	seg, err := shm.Create(l.dirID, hdr)
	if err != nil {
		return fmt.Errorf("renew the segment of %s: create shared memory segment: %w", l.rec.DataDir, err)
	}
	old.Detach()
	l.seg = seg
	r := l.rec
	r.ShmKey, r.ShmID = seg.Key, seg.ID
	if err := l.write(r); err != nil {
		return fmt.Errorf("renew the segment of %s: record new segment %d: %w", l.rec.DataDir, seg.ID, err)
	}
	return nil
}

// Release gives the directory back: the record is marked stopped, the
// segment detached and removed, and the lock released last. The pidfile
// stays. Release is idempotent.
//
// Release only once the processes you started for the directory are gone,
// as dirlockd run does: a stopped record is taken as proof that nobody is
// left, and the next Acquire or Inspect does not search for survivors
// (unless the pidfile was rewritten after the release, or the segment
// survives).
//
// The stopped mark is fsynced only on shared storage, where another host
// reads it (pidfile.File.Amend). Locally every reader shares this kernel's
// page cache, and all a power loss can cost is the mark itself: the next
// boot then calls the release unclean, a false alarm, never a false
// reassurance. The record naming a new holder is the one Acquire syncs.
func (l *Lock) Release() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return nil
	}
	l.released = true
	r := l.rec
	r.Extra = maps.Clone(l.rec.Extra)
	r.Status = pidfile.Stopped
	if r.Extra == nil {
		r.Extra = map[string]string{}
	}
	r.Extra[stoppedAtKey] = time.Now().UTC().Format(time.RFC3339Nano)
	errMark := l.file.Amend(&r)
	if errMark == nil {
		l.rec = r
	}
	l.opts.step(StepReleaseMarked)
	errDetach := l.seg.Detach()
	l.opts.step(StepReleaseDetached)
	errRemove := l.seg.Remove()
	l.opts.step(StepReleaseRemoved)
	errClose := l.file.Close()
	l.opts.step(StepReleaseUnlocked)
	return errors.Join(errMark, errDetach, errRemove, errClose)
}
