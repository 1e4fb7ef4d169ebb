package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/dirlockd/dirlockd/internal/cli"
	"github.com/dirlockd/dirlockd/internal/lease"
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
		cli.Detail(fs, "etcd", "Comma-separated host:port or URLs, default $DIRLOCKD_ETCD: the data directory is held with a lease on etcd too (docs/lease.md).")
		fs.StringVar(&f.key, "lease-key", "", "the key naming the holder, on all hosts")
		cli.Detail(fs, "lease-key", "Required with --etcd; the same on every host that runs the server.")
		fs.DurationVar(&f.ttl, "lease-ttl", f.ttl, "lease TTL, whole seconds")
		cli.Detail(fs, "lease-ttl", "A dead host's lease ends after at most this. For a crash or pause of etcd's leader to cost nothing, keep it at least 6 times etcd's election timeout (docs/lease.md).")
		fs.DurationVar(&f.stopTimeout, "lease-stop-timeout", 0, "SIGTERM this long before the lease ends")
		cli.Detail(fs, "lease-stop-timeout", "How long before the lease's deadline, less a margin of TTL/10, the server gets SIGTERM when renewals fail; SIGKILL follows at the margin. 0 is TTL/5; otherwise at least 100ms.")
	case leaseStress:
		fs.StringVar(&f.endpoints, "etcd", "", "etcd endpoints: holds take a lease too")
		cli.Detail(fs, "etcd", "Comma-separated host:port or URLs, default $DIRLOCKD_ETCD: each hold takes a lease on etcd too, as run --etcd does, and logs its fencing token (docs/lease.md).")
		fs.StringVar(&f.key, "lease-key", "", "the key every host's holds take")
		cli.Detail(fs, "lease-key", "Required with --etcd.")
		fs.DurationVar(&f.ttl, "lease-ttl", f.ttl, "lease TTL, whole seconds")
		cli.Detail(fs, "lease-ttl", "A killed worker's lease ends after it.")
	default:
		fs.StringVar(&f.endpoints, "etcd", "", "etcd endpoints: ask etcd too")
		cli.Detail(fs, "etcd", "Comma-separated host:port or URLs, default $DIRLOCKD_ETCD: etcd is asked who holds --lease-key too (docs/lease.md).")
		fs.StringVar(&f.key, "lease-key", "", "the key naming the holder, as given to run")
		cli.Detail(fs, "lease-key", "Required with --etcd.")
	}
	fs.DurationVar(&f.dialTimeout, "etcd-dial-timeout", 5*time.Second, "timeout of a request to etcd")
	cli.Detail(fs, "etcd-dial-timeout", "How long etcd may take to answer a request (for run, while acquiring); at least 100ms.")
	fs.StringVar(&f.cacert, "cacert", "", "CA bundle for etcd's TLS (PEM)")
	cli.CompleteFiles(fs, "cacert")
	fs.StringVar(&f.cert, "cert", "", "TLS client certificate (PEM)")
	cli.CompleteFiles(fs, "cert")
	fs.StringVar(&f.certKey, "key", "", "TLS client key (PEM)")
	cli.CompleteFiles(fs, "key")
	fs.StringVar(&f.user, "etcd-user", "", "etcd user, NAME[:PASSWORD]")
	cli.Detail(fs, "etcd-user", "Without :PASSWORD, the password is read from $DIRLOCKD_ETCD_PASSWORD.")
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
	if _, err := lease.NewTiming(f.ttl, f.stopTimeout); err != nil {
		return false, err
	}
	return true, nil
}

// config is the lease's configuration (settle has checked it).
func (f *leaseFlags) config() lease.Config {
	t, _ := lease.NewTiming(f.ttl, f.stopTimeout)
	cfg := lease.Config{Endpoints: strings.Split(f.endpoints, ","), Key: f.key, TTL: f.ttl, DialTimeout: f.dialTimeout,
		CACert: f.cacert, Cert: f.cert, CertKey: f.certKey, Timing: t}
	if f.user != "" {
		name, pw, ok := strings.Cut(f.user, ":")
		if !ok {
			pw = os.Getenv("DIRLOCKD_ETCD_PASSWORD")
		}
		cfg.Username, cfg.Password = name, pw
	}
	return cfg
}

// inspectLease asks etcd who holds the key. Nothing is held or written.
func (f *leaseFlags) inspectLease() *lease.Report { return lease.Inspect(f.config()) }

// addLease folds the lease into a directory's report. A key held by
// another holder makes a free or stale directory held: on shared storage
// the local lock may prove nothing, the lease does. A lease that cannot be
// inspected makes a free directory's state unknown (invalid): a start there
// would fail.
func (r *report) addLease(lr *lease.Report) {
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
