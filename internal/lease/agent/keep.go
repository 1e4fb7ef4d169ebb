package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dirlockd/dirlockd/internal/lease"
)

// Lease is a held lock key and the lease under it. It renews only when
// asked (Renew): its holder, not this package, decides when.
type Lease struct {
	c     *Client
	id    clientv3.LeaseID
	token int64
	ttl   time.Duration
	sent  time.Duration // the grant's send time, on lease.Now's clock
	val   []byte        // the key's value: the holder's identity
}

// Token is the fencing token: the lock key's create revision, which
// strictly increases with every new holder.
func (l *Lease) Token() int64 { return l.token }

// TTL is the TTL etcd granted.
func (l *Lease) TTL() time.Duration { return l.ttl }

// ID is etcd's lease ID.
func (l *Lease) ID() int64 { return int64(l.id) }

// Key is the lock key.
func (l *Lease) Key() string { return l.c.cfg.Key }

// Granted describes the lease as the agent's reply does.
func (l *Lease) Granted() lease.Granted {
	return lease.Granted{ID: l.ID(), Token: l.token, TTL: l.ttl, Sent: l.sent}
}

// Renew sends one KeepAliveOnce, and gives up at until (on lease.Now's
// clock). It reports the send time, taken before the request left: the
// deadline it proves is Sent + TTL. "No leader" is a failure: etcd 3.4
// before 3.4.31 lets a partitioned member answer renewals it has no right
// to. A lease etcd no longer knows fails with ErrLost.
func (l *Lease) Renew(ctx context.Context, until time.Duration) (lease.Renewal, error) {
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), until-lease.Now())
	defer cancel()
	sent := lease.Now()
	resp, err := l.c.cli.KeepAliveOnce(ctx, l.id)
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		return lease.Renewal{}, fmt.Errorf("%w: etcd says it has ended", ErrLost)
	case err != nil:
		return lease.Renewal{}, l.c.failed("renew the lease", err)
	}
	return lease.Renewal{Sent: sent, TTL: time.Duration(resp.TTL) * time.Second}, nil
}

// Revoke ends the lease, which deletes the lock key, so that a waiter on
// another host starts at once rather than after the TTL: the key's value is
// marked released first (while the key is still ours), which tells the
// waiter that the end is clean. A lease etcd no longer knows is no error.
// Both requests together take at most the dial timeout, and end with ctx
// (the holder's budget for its release, lease.Lease.Release).
func (l *Lease) Revoke(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout(&l.c.cfg))
	defer cancel()
	var id Identity
	if json.Unmarshal(l.val, &id) == nil {
		id.Released = true
		if val, err := json.Marshal(id); err == nil {
			// Best effort: without the mark a waiter only waits longer.
			l.c.cli.Txn(ctx).
				If(clientv3.Compare(clientv3.CreateRevision(l.c.cfg.Key), "=", l.token)).
				Then(clientv3.OpPut(l.c.cfg.Key, string(val), clientv3.WithLease(l.id))).
				Commit()
		}
	}
	if _, err := l.c.cli.Revoke(ctx, l.id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return l.c.failed("revoke the lease", err)
	}
	return nil
}

// Gone blocks until the lock key this lease holds is deleted (by a revoke,
// the lease's expiry, or etcd revoking it early) or ctx ends. A holder
// that learns of it kills at once rather than at its next renewal. etcd
// unavailable meanwhile is waited out.
func (l *Lease) Gone(ctx context.Context) error {
	rev := l.token
	for {
		_, err := l.c.waitDeleted(ctx, l.c.cli, rev, false)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if errors.Is(err, rpctypes.ErrCompacted) {
			// The history since rev is gone: look at the key itself.
			gctx, cancel := context.WithTimeout(ctx, dialTimeout(&l.c.cfg))
			resp, gerr := l.c.cli.Get(gctx, l.c.cfg.Key)
			cancel()
			if gerr == nil {
				if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != l.token {
					return nil
				}
				rev = resp.Header.Revision
			}
		}
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
