// Package agent is the etcd agent, the executable dirlockd-etcd: it holds a
// data directory across hosts with a lease on etcd, for dirlockd, which
// drives it through package lease.
//
// The storage's own locks guard a directory only among the processes that
// share the lock manager; on shared storage whose locks are broken or local
// to each host they guard nothing. A lease on etcd is a second interlock
// that does not depend on the storage: a lock key, put under a lease in a
// transaction that succeeds only if the key does not exist, names the one
// holder, and the key's create revision is its fencing token, a number that
// strictly increases with every new holder.
//
// The rule that keeps one holder is that the holder stops before its lease
// can end. etcd's client library cannot be trusted with that: its keepalive
// channel closes some time after the server may already have expired the
// lease, because it counts from when a response arrived. A Lease is
// therefore renewed one KeepAliveOnce at a time, when its holder asks
// (Renew), and each renewal reports its send time: the server cannot have
// received a request before it was sent, so it cannot expire the lease
// before send time + TTL. lease.Keeper keeps that deadline; once it passes
// without a renewal, the lease is lost for good, and a later renewal that
// "succeeds" (a new etcd leader refreshes every lease) never brings it back.
//
// This package is the only one that imports etcd's client, and only the
// agent executable, cmd/dirlockd-etcd, imports it (Serve): see package
// lease for why.
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dirlockd/dirlockd/internal/lease"
)

// Config says how to reach etcd and which key to hold.
type Config = lease.Config

// The types callers branch on are the agent package's, which does not
// import etcd: the parent process of the agent sees the same ones.
type (
	Identity = lease.Identity
	Holder   = lease.Holder
)

// Self returns the calling process's identity as the holder of dir.
func Self(dir string) (Identity, error) { return lease.Self(dir) }

func dialTimeout(c *Config) time.Duration {
	if c.DialTimeout > 0 {
		return c.DialTimeout
	}
	return 5 * time.Second
}

// Client is a connection to etcd. Nothing of etcd's client exists until
// Dial: a program that never calls it runs none of its goroutines.
//
// Requests go through one client that etcd's balancer spreads round-robin
// over every endpoint, one request to the next endpoint: fine for a read or
// a renewal, each complete in itself, but not for an acquisition, whose
// grant, transaction, revoke and watch must all reach a member that has a
// leader. Acquire therefore pins each attempt to one endpoint (members).
type Client struct {
	cfg Config
	cli *clientv3.Client

	mu      sync.Mutex
	members []*clientv3.Client // one per endpoint, dialed on first use; nil with one endpoint
	next    int                // the endpoint acquisition attempts go to
}

// Dial connects to etcd. It does not wait for the connection: the first
// request says whether etcd answers.
func Dial(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("no etcd endpoints")
	}
	if cfg.Key == "" {
		return nil, errors.New("no lease key")
	}
	if cfg.TTL < time.Second || cfg.TTL%time.Second != 0 {
		return nil, fmt.Errorf("lease TTL %v: want whole seconds, at least 1s", cfg.TTL)
	}
	tc, err := tlsConfig(cfg)
	if err != nil {
		return nil, &RefusedError{Key: cfg.Key, Problem: "cannot use the TLS files", Fix: "check --cacert, --cert and --key", Err: err}
	}
	c := &Client{cfg: cfg}
	cli, err := c.dial(tc, cfg.Endpoints)
	if err != nil {
		// With a user, New authenticates at once.
		return nil, c.failed("connect", err)
	}
	c.cli = cli
	if len(cfg.Endpoints) > 1 {
		c.members = make([]*clientv3.Client, len(cfg.Endpoints))
	}
	return c, nil
}

func (c *Client) dial(tc *tls.Config, endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: dialTimeout(&c.cfg),
		TLS:         tc,
		Username:    c.cfg.Username,
		Password:    c.cfg.Password,
		// Errors reach the caller, who logs them in dirlockd's format.
		Logger: zap.NewNop(),
	})
}

// member returns the connection to the endpoint acquisition attempts go
// to now, dialed on first use, and its index for rotate. With one
// endpoint it is the client's own connection.
func (c *Client) member() (*clientv3.Client, int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.members == nil {
		return c.cli, 0, nil
	}
	i := c.next
	if c.members[i] == nil {
		tc, err := tlsConfig(c.cfg)
		if err != nil {
			return nil, i, err
		}
		m, err := c.dial(tc, c.cfg.Endpoints[i:i+1])
		if err != nil {
			return nil, i, c.failed("connect to "+c.cfg.Endpoints[i], err)
		}
		c.members[i] = m
	}
	return c.members[i], i, nil
}

// rotate moves acquisition attempts to the next endpoint after one on
// endpoint i failed (unless another failure moved them already): a member
// cut off from the majority answers "no leader", or nothing, and so will
// every attempt that goes to it; the next endpoint may well have a leader.
func (c *Client) rotate(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.members != nil && c.next == i {
		c.next = (i + 1) % len(c.members)
	}
}

// Close closes the connections.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		if m != nil {
			m.Close()
		}
	}
	return c.cli.Close()
}

// Endpoints returns the endpoints, for messages.
func (c *Client) Endpoints() string { return strings.Join(c.cfg.Endpoints, ",") }

// Holder returns the current holder of the key, or nil when it is free.
func (c *Client) Holder(ctx context.Context) (*Holder, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout(&c.cfg))
	defer cancel()
	resp, err := c.cli.Get(ctx, c.cfg.Key)
	if err != nil {
		return nil, c.failed("read the lock key", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return c.holder(resp.Kvs[0].Value, resp.Kvs[0].CreateRevision, resp.Kvs[0].Lease)
}

// holder decodes a lock key's value. A key that is not a dirlockd holder
// (no lease, or a value that is not an identity) belongs to something else.
func (c *Client) holder(v []byte, rev, lease int64) (*Holder, error) {
	h := &Holder{Token: rev, Lease: lease}
	if err := json.Unmarshal(v, &h.Identity); err != nil || h.PID == 0 || h.Host == "" || lease == 0 {
		return nil, &RefusedError{Key: c.cfg.Key, Problem: fmt.Sprintf("it holds %q, not a dirlockd holder under a lease", truncate(v, 80)),
			Fix: "another tool uses this key: pick another --lease-key"}
	}
	return h, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// tlsConfig loads the TLS files cfg names; nil without any.
func tlsConfig(cfg Config) (*tls.Config, error) {
	if cfg.CACert == "" && cfg.Cert == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CACert != "" {
		pem, err := os.ReadFile(cfg.CACert)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate in it", cfg.CACert)
		}
	}
	if cfg.Cert != "" {
		c, err := tls.LoadX509KeyPair(cfg.Cert, cfg.CertKey)
		if err != nil {
			return nil, fmt.Errorf("%s, %s: %w", cfg.Cert, cfg.CertKey, err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}
