package interlock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/pidfile"
)

// A holder that runs for long proves it is alive by rewriting a heartbeat
// into its record every Options.Recheck (Lock.Heartbeat). The record keys:
const (
	heartbeatKey         = "heartbeat"          // RFC 3339 time of the last beat, by the holder's clock
	heartbeatIntervalKey = "heartbeat_interval" // how often it beats, as a Go duration
)

// HeartbeatFresh bounds how old, by this host's clock, another host's last
// heartbeat may be and still make Acquire watch for the next one. It is
// generous because the two clocks need not agree: the watch itself compares
// nothing across hosts, it only looks for change.
const HeartbeatFresh = time.Hour

// DefaultTakeoverAfter is the watch when neither Options.TakeoverAfter nor
// Options.Recheck nor the record's own interval says otherwise: three times
// dirlockd run's default recheck.
const DefaultTakeoverAfter = 30 * time.Second

// Takeover says how Acquire took the directory over from another host: the
// lock was free, and the record named a holder on another host (or an
// earlier boot) that had not shut down cleanly.
type Takeover struct {
	Host      string    // the previous holder's host
	PID       int       // its PID, meaningless here
	Heartbeat time.Time // its last heartbeat; zero if it wrote none
	// Watched is how long Acquire watched the heartbeat stand still; zero
	// when it had none or an old one, and the lock's word was taken alone.
	Watched time.Duration
	// Proof is why the watch was not needed (Options.TakeoverProof), if
	// it was not.
	Proof string
}

func (t *Takeover) String() string {
	switch {
	case t.Proof != "":
		return fmt.Sprintf("took over from host %s (PID %d) without watching its heartbeat: %s", t.Host, t.PID, t.Proof)
	case t.Watched > 0:
		return fmt.Sprintf("took over from host %s (PID %d): the lock was free and its heartbeat (last %s) did not move for %s",
			t.Host, t.PID, t.Heartbeat.Local().Format(time.RFC3339Nano), t.Watched.Round(time.Millisecond))
	case t.Heartbeat.IsZero():
		return fmt.Sprintf("took over from host %s (PID %d) on the lock's word alone: it wrote no heartbeat to watch", t.Host, t.PID)
	}
	return fmt.Sprintf("took over from host %s (PID %d): the lock was free and its last heartbeat is old (%s)",
		t.Host, t.PID, t.Heartbeat.Local().Format(time.RFC3339))
}

// heartbeat returns the record's last heartbeat and interval, if any.
func heartbeat(r *pidfile.Record) (at time.Time, every time.Duration) {
	if r == nil {
		return
	}
	at, _ = time.Parse(time.RFC3339Nano, r.Extra[heartbeatKey])
	every, _ = time.ParseDuration(r.Extra[heartbeatIntervalKey])
	return at, max(every, 0)
}

// otherHost reports whether r was written by a holder whose processes and
// segments this host cannot see or judge: another host, or this one before
// a reboot.
func (s self) otherHost(r *pidfile.Record) bool {
	return r != nil && (r.Hostname != s.host || r.BootID != s.bootID)
}

// remoteHolder reports whether rec, read from a pidfile on fs, may name a
// holder the lock does not show: on shared storage, a record of another host
// (or of this one before a reboot) that was not stopped. On a local
// filesystem the kernel's lock is the whole truth. Acquire takes over from
// such a holder only after watching its heartbeat (takeoverWatch), and
// Inspect says how long that watch would be.
func (s self) remoteHolder(fs pidfile.Filesystem, rec *pidfile.Record) bool {
	return fs.Shared() && s.otherHost(rec) && rec.Status != pidfile.Stopped
}

// takeoverWatch returns how long Acquire must watch rec's heartbeat before
// taking over, or 0 when there is nothing to watch (no remoteHolder, or no
// fresh heartbeat). The watch is never shorter than twice the holder's own
// interval: a shorter one would prove nothing about a holder that beats
// slowly.
func (o Options) takeoverWatch(fs pidfile.Filesystem, rec *pidfile.Record, me self, now time.Time) time.Duration {
	if !me.remoteHolder(fs, rec) {
		return 0
	}
	at, every := heartbeat(rec)
	if at.IsZero() || now.Sub(at) > HeartbeatFresh {
		return 0
	}
	d := o.TakeoverAfter
	if d <= 0 {
		d = 3 * max(o.Recheck, every)
		if d == 0 {
			d = DefaultTakeoverAfter
		}
	}
	return max(d, 2*every)
}

// watchHeartbeat holds the lock of f for d, measured on this host's clock,
// and fails with a *BrokenLocksError if the record changes meanwhile: a
// holder on another host is then alive although the lock was free, which
// only storage whose locks do not reach that host allows (sanlock's
// delta-lease rule, with the pidfile as the lease).
func watchHeartbeat(ctx context.Context, f *pidfile.File, rec *pidfile.Record, raw []byte, d time.Duration) error {
	poll := min(max(d/20, 10*time.Millisecond), 500*time.Millisecond)
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: gave up watching the heartbeat of host %s: %w", f.Dir(), rec.Hostname, ctx.Err())
		case <-time.After(poll):
		}
		now, b, err := f.ReadRecord()
		if err != nil && !errors.Is(err, pidfile.ErrMalformed) {
			return err
		}
		if !bytes.Equal(b, raw) {
			return &BrokenLocksError{Dir: f.Dir(), Record: rec, Now: now, Watched: time.Since(start)}
		}
		if time.Since(start) >= d {
			return nil
		}
	}
}

// Heartbeat writes the current time into the record, through the locked
// descriptor, and syncs it. Holders that run for long call it every
// Options.Recheck, after Check: it tells a starter on another host that this
// holder is alive even if the storage's locks fail to, and it is how a lost
// NFSv4 lock shows: once the client has lost the lock with its lease, writes
// through the descriptor fail with EIO. A failure that means the storage no
// longer honours the descriptor (EIO, ESTALE, ENOLCK) matches ErrLost, and
// so does a write refused because the pidfile's inode gained another name.
func (l *Lock) Heartbeat() error {
	err := l.Update(func(r *pidfile.Record) {
		if r.Extra == nil {
			r.Extra = map[string]string{}
		}
		r.Extra[heartbeatKey] = time.Now().UTC().Format(time.RFC3339Nano)
		if l.opts.Recheck > 0 {
			r.Extra[heartbeatIntervalKey] = l.opts.Recheck.String()
		}
	})
	if errors.Is(err, unix.EIO) || errors.Is(err, unix.ESTALE) || errors.Is(err, unix.ENOLCK) {
		return &LostError{Dir: l.rec.DataDir,
			Reason: "the storage refused a write through the locked descriptor (an NFSv4 client does so once the lock is lost with its lease)", Err: err}
	}
	if errors.Is(err, pidfile.ErrInvalid) {
		return &LostError{Dir: l.rec.DataDir, Reason: "the pidfile is no longer provably ours to write", Err: err}
	}
	return err
}

// Takeover describes how the directory was taken over from another host;
// nil when the previous holder was on this host, or shut down cleanly.
func (l *Lock) Takeover() *Takeover { return l.takeover }
