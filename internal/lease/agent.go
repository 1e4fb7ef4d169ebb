// Package lease is dirlockd's side of the etcd lease, the second, cross-host
// interlock of a data directory (docs/lease.md): the handle on the etcd
// agent that holds the lease (Start, Agent, Lease), the renewal deadline
// (Keeper), the lease as a holder's guard (Guard: run's, around its
// server, and stress's), the watchdog process that SIGKILLs the server's
// tree if dirlockd is paused or dies before the lease can end (Watchdog),
// the token file that remembers the highest fencing token that ran in a
// directory (AdvanceTokenFile), and what check, status and wait ask of
// the key (Inspect, Waiter). It never imports etcd's client: the agent,
// package agent, does.
//
// Go runs every package's initialisation at start: linked into dirlockd,
// etcd's client and its gRPC stack would cost every invocation, --etcd or
// not, a few milliseconds and some 10 MiB of memory. The client lives in
// the agent instead, the executable dirlockd-etcd (cmd/dirlockd-etcd,
// package internal/lease/agent), which dirlockd starts only for --etcd and talks
// to over its standard input and output, one JSON object a line. This
// package is the side that does not import etcd: the wire types, the
// errors callers branch on, the parent's handle on the agent (Start,
// Agent, Lease), and the renewal loop with its deadline (Keeper).
//
// The parent drives the renewals: the agent renews only when asked, once
// per request, and answers with the send time of that renewal, so that a
// parent that is stopped (SIGSTOP, a stuck goroutine) renews nothing and
// its lease runs out, which its watchdog (watchdog.go) acts on; an
// agent that is stopped answers nothing, and the parent's deadline passes
// likewise. Times cross the pipe as CLOCK_BOOTTIME nanoseconds (Now): the
// one clock both processes read alike that, like etcd's own, goes on while
// the host is suspended, where CLOCK_MONOTONIC, Go's, stands still and
// would let a resumed host believe in a lease etcd has already ended.
package lease

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/proc"
)

// Config says how to reach etcd and which key to hold. It travels to the
// agent over its standard input (never its command line or environment,
// where other users could read the password).
type Config struct {
	Endpoints   []string      `json:"endpoints"` // host:port or URLs
	Key         string        `json:"key"`       // the lock key
	TTL         time.Duration `json:"ttl"`       // the lease's TTL, whole seconds (etcd may grant more)
	DialTimeout time.Duration `json:"dial_timeout"`
	CACert      string        `json:"cacert,omitempty"` // PEM files, read by the agent
	Cert        string        `json:"cert,omitempty"`
	CertKey     string        `json:"cert_key,omitempty"`
	Username    string        `json:"username,omitempty"`
	Password    string        `json:"password,omitempty"`

	// Timing is how often the parent renews (0: TTL/3) and when a
	// guarded server is stopped (Guard). It stays on this side of the
	// pipe.
	Timing `json:"-"`
}

func (c *Config) renew() time.Duration {
	if c.Renew > 0 {
		return c.Renew
	}
	return c.TTL / 3
}

// Identity is the holder's identity, stored as the lock key's value so that
// a host that finds the key held can say who holds it.
type Identity struct {
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	BootID  string    `json:"boot_id"`
	DataDir string    `json:"datadir"`
	Started time.Time `json:"started"`
	// Released is set in the key's value just before a clean release
	// revokes the lease: a waiter that sees the key deleted without it
	// does not trust the end of the lease at once (agent.Client.Acquire).
	Released bool `json:"released,omitempty"`
}

// Self returns the calling process's identity as the holder of dir.
func Self(dir string) (Identity, error) {
	host, err := os.Hostname()
	if err != nil {
		return Identity{}, fmt.Errorf("hostname: %w", err)
	}
	boot, err := proc.BootID()
	if err != nil {
		return Identity{}, err
	}
	return Identity{Host: host, PID: os.Getpid(), BootID: boot, DataDir: dir, Started: time.Now().UTC().Truncate(time.Second)}, nil
}

// Holder is the lock key as found in etcd.
type Holder struct {
	Identity
	Token int64 `json:"token"` // the key's create revision
	Lease int64 `json:"lease"` // the lease the key is attached to
}

// Now is CLOCK_BOOTTIME: the time since boot, suspended time included.
// Lease deadlines are on this clock.
func Now() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return time.Duration(ts.Nano())
}
