package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/dirlockd/dirlockd/internal/lease"
)

// The lease's share of its TTL when the flags do not say: renewal every
// TTL/3, SIGTERM a fifth of the TTL before the deadline (plus the margin),
// SIGKILL a tenth before it. That leaves over a third of the TTL for a
// renewal that fails and the retry after it, before the server is stopped.
const (
	renewShare  = 3
	stopShare   = 5
	marginShare = 10
)

// leaseFlags are the flags of the etcd lease, shared by run, check, status
// and wait. Nothing of etcd's client is touched unless --etcd (or
// $DIRLOCKD_ETCD) names endpoints.
type leaseFlags struct {
	endpoints   string
	key         string
	ttl         time.Duration
	stopTimeout time.Duration // run only; 0: TTL/stopShare
	cacert      string
	cert        string
	certKey     string
	user        string
	dialTimeout time.Duration
}

// leaseTiming is when run stops its server before the lease's deadline.
type leaseTiming struct {
	renew, stop, margin time.Duration
}

// What a command does with the lease flags.
type leaseUse int

const (
	leaseRun     leaseUse = iota // run: holds it, and stops the server before it can end
	leaseStress                  // stress: each hold takes it
	leaseInspect                 // check, status, wait: ask who holds it
)

// addLeaseFlags adds the lease flags that apply to use.
func addLeaseFlags(fs *pflag.FlagSet, f *leaseFlags, use leaseUse) {
	f.ttl = 10 * time.Second
	switch use {
	case leaseRun:
		fs.StringVar(&f.endpoints, "etcd", "", "etcd endpoints: hold a lease on etcd too")
		detail(fs, "etcd", "Comma-separated host:port or URLs, default $DIRLOCKD_ETCD: the data directory is held with a lease on etcd too (docs/lease.md).")
		fs.StringVar(&f.key, "lease-key", "", "the key naming the holder, on all hosts")
		detail(fs, "lease-key", "Required with --etcd; the same on every host that runs the server.")
		fs.DurationVar(&f.ttl, "lease-ttl", f.ttl, "lease TTL, whole seconds")
		detail(fs, "lease-ttl", "A dead host's lease ends after at most this.")
		fs.DurationVar(&f.stopTimeout, "lease-stop-timeout", 0, "SIGTERM this long before the lease ends")
		detail(fs, "lease-stop-timeout", "How long before the lease's deadline, less a margin of TTL/10, the server gets SIGTERM when renewals fail; SIGKILL follows at the margin. 0 is TTL/5; otherwise at least 100ms.")
	case leaseStress:
		fs.StringVar(&f.endpoints, "etcd", "", "etcd endpoints: holds take a lease too")
		detail(fs, "etcd", "Comma-separated host:port or URLs, default $DIRLOCKD_ETCD: each hold takes a lease on etcd too, as run --etcd does, and logs its fencing token (docs/lease.md).")
		fs.StringVar(&f.key, "lease-key", "", "the key every host's holds take")
		detail(fs, "lease-key", "Required with --etcd.")
		fs.DurationVar(&f.ttl, "lease-ttl", f.ttl, "lease TTL, whole seconds")
		detail(fs, "lease-ttl", "A killed worker's lease ends after it.")
	default:
		fs.StringVar(&f.endpoints, "etcd", "", "etcd endpoints: ask etcd too")
		detail(fs, "etcd", "Comma-separated host:port or URLs, default $DIRLOCKD_ETCD: etcd is asked who holds --lease-key too (docs/lease.md).")
		fs.StringVar(&f.key, "lease-key", "", "the key naming the holder, as given to run")
		detail(fs, "lease-key", "Required with --etcd.")
	}
	fs.DurationVar(&f.dialTimeout, "etcd-dial-timeout", 5*time.Second, "timeout of a request to etcd")
	detail(fs, "etcd-dial-timeout", "How long etcd may take to answer a request (for run, while acquiring); at least 100ms.")
	fs.StringVar(&f.cacert, "cacert", "", "CA bundle for etcd's TLS (PEM)")
	completeFiles(fs, "cacert")
	fs.StringVar(&f.cert, "cert", "", "TLS client certificate (PEM)")
	completeFiles(fs, "cert")
	fs.StringVar(&f.certKey, "key", "", "TLS client key (PEM)")
	completeFiles(fs, "key")
	fs.StringVar(&f.user, "etcd-user", "", "etcd user, NAME[:PASSWORD]")
	detail(fs, "etcd-user", "Without :PASSWORD, the password is read from $DIRLOCKD_ETCD_PASSWORD.")
}

// settle fills in $DIRLOCKD_ETCD and checks the flags; it returns whether a
// lease is wanted, or why the flags cannot be obeyed.
func (f *leaseFlags) settle(fs *pflag.FlagSet) (bool, error) {
	if f.endpoints == "" {
		f.endpoints = os.Getenv("DIRLOCKD_ETCD")
	}
	if f.endpoints == "" {
		for _, n := range []string{"lease-key", "lease-ttl", "lease-stop-timeout", "etcd-dial-timeout", "cacert", "cert", "key", "etcd-user"} {
			if fs.Changed(n) {
				return false, fmt.Errorf("--%s without --etcd (or $DIRLOCKD_ETCD)", n)
			}
		}
		return false, nil
	}
	switch {
	case f.key == "":
		return false, fmt.Errorf("--etcd needs --lease-key NAME: the same key on every host that may mount the directory (no default: hosts may mount it at different paths)")
	case f.ttl < time.Second || f.ttl%time.Second != 0:
		return false, fmt.Errorf("--lease-ttl %v: want whole seconds, at least 1s", f.ttl)
	case (f.cert == "") != (f.certKey == ""):
		return false, fmt.Errorf("--cert and --key go together")
	}
	floors := []floor{{"etcd-dial-timeout", 100 * time.Millisecond, ""}}
	if fs.Lookup("lease-stop-timeout") != nil {
		floors = append(floors, floor{"lease-stop-timeout", 100 * time.Millisecond, "TTL/5"})
	}
	if err := checkFloors(fs, floors...); err != nil {
		return false, err
	}
	if _, err := f.timing(); err != nil {
		return false, err
	}
	return true, nil
}

// timing derives when run renews and stops from the TTL, and refuses a
// --lease-stop-timeout that leaves no room: a renewal interval, the stop
// budget and the margin must fit in the TTL, or the server would be stopped
// between two renewals that both succeed.
func (f *leaseFlags) timing() (leaseTiming, error) {
	t := leaseTiming{renew: f.ttl / renewShare, stop: f.stopTimeout, margin: f.ttl / marginShare}
	if t.stop == 0 {
		t.stop = f.ttl / stopShare
	}
	if t.renew+t.stop+t.margin >= f.ttl {
		return t, fmt.Errorf("--lease-stop-timeout %v leaves no room in --lease-ttl %v: the renewal interval (%v, TTL/3), the stop timeout and the margin (%v, TTL/10) must add up to less than the TTL; want a stop timeout below %v or a longer TTL",
			t.stop, f.ttl, t.renew, t.margin, f.ttl-t.renew-t.margin)
	}
	return t, nil
}

// config builds the lease's configuration.
func (f *leaseFlags) config() lease.Config {
	cfg := lease.Config{Endpoints: strings.Split(f.endpoints, ","), Key: f.key, TTL: f.ttl, Renew: f.ttl / renewShare, DialTimeout: f.dialTimeout,
		CACert: f.cacert, Cert: f.cert, CertKey: f.certKey}
	if f.user != "" {
		name, pw, ok := strings.Cut(f.user, ":")
		if !ok {
			pw = os.Getenv("DIRLOCKD_ETCD_PASSWORD")
		}
		cfg.Username, cfg.Password = name, pw
	}
	return cfg
}

// startAgent starts the etcd agent (dirlockd-etcd: package lease says why
// etcd's client is not in this binary) for the lease flags.
func (f *leaseFlags) startAgent() (*lease.Agent, error) {
	path, err := lease.Path()
	if err != nil {
		return nil, err
	}
	return lease.Start(path, f.config())
}

// leaseReport is what check, status and wait say about the lease key.
type leaseReport struct {
	Key          string `json:"key"`
	State        string `json:"state"` // free, held, unknown
	Host         string `json:"host,omitempty"`
	PID          int    `json:"pid,omitempty"`
	BootID       string `json:"boot_id,omitempty"`
	Datadir      string `json:"datadir,omitempty"`
	Since        string `json:"since,omitempty"`
	FencingToken int64  `json:"fencing_token,omitempty"`
	Error        string `json:"error,omitempty"`
}

// inspectLease asks etcd who holds the key. Nothing is held or written.
func (f *leaseFlags) inspectLease() *leaseReport {
	a, err := f.startAgent()
	if err != nil {
		return &leaseReport{Key: f.key, State: "unknown", Error: err.Error()}
	}
	defer a.Close()
	h, err := a.Holder(context.Background())
	return newLeaseReport(f.key, h, err)
}

// newLeaseReport describes the holder h found (nil: free), or the error.
func newLeaseReport(key string, h *lease.Holder, err error) *leaseReport {
	lr := &leaseReport{Key: key, State: "free"}
	switch {
	case err != nil:
		lr.State, lr.Error = "unknown", err.Error()
	case h != nil:
		lr.State, lr.Host, lr.PID, lr.BootID, lr.Datadir = "held", h.Host, h.PID, h.BootID, h.DataDir
		lr.Since, lr.FencingToken = h.Started.Format(time.RFC3339), h.Token
	}
	return lr
}

// addLease folds the lease into a directory's report. A key held by
// another holder makes a free or stale directory held: on shared storage
// the local lock may prove nothing, the lease does. A lease that cannot be
// inspected makes a free directory's state unknown (invalid): a start there
// would fail.
func (r *report) addLease(lr *leaseReport) {
	r.Lease = lr
	switch {
	case r.State != "free" && r.State != "stale":
	case lr.State == "held":
		r.State, r.PID, r.Host, r.Started = "held", lr.PID, lr.Host, lr.Since
		r.Reason = fmt.Sprintf("the lease key %q is held by PID %d on host %s since %s (fencing token %d)", lr.Key, lr.PID, lr.Host, lr.Since, lr.FencingToken)
	case lr.State == "unknown":
		r.State, r.Reason = "invalid", "cannot inspect the lease: "+lr.Error
	}
}

// leaseWaiter is wait's look at the lease key: one agent for the whole
// wait, and etcd's watch rather than a look every so often.
type leaseWaiter struct {
	a *lease.Agent
}

func (f *leaseFlags) waiter() (*leaseWaiter, error) {
	a, err := f.startAgent()
	if err != nil {
		return nil, err
	}
	return &leaseWaiter{a: a}, nil
}

func (w *leaseWaiter) Close() { w.a.Close() }

// wait blocks until the key is held (held) or free, or until until (zero:
// no end). It returns nil once the key is as wanted; etcd unavailable, or
// the end, is an error after a pause, for the caller to look again.
func (w *leaseWaiter) wait(held bool, until time.Time) error {
	ctx := context.Background()
	if !until.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, until)
		defer cancel()
	}
	_, err := w.a.WaitFor(ctx, held)
	var ue *lease.UnavailableError
	if errors.As(err, &ue) {
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	return err
}
