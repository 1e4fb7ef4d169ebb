package lease

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dirlockd/dirlockd/internal/lease/agent"
)

// Lease is a held lock key and the lease under it. It renews only when
// asked (Renew): its holder, not this package, decides when.
type Lease struct {
	c     *Client
	id    clientv3.LeaseID
	token int64
	ttl   time.Duration
	sent  time.Duration // the grant's send time, on agent.Now's clock
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
func (l *Lease) Granted() agent.Granted {
	return agent.Granted{ID: l.ID(), Token: l.token, TTL: l.ttl, Sent: l.sent}
}

// Renew sends one KeepAliveOnce, and gives up at until (on agent.Now's
// clock). It reports the send time, taken before the request left: the
// deadline it proves is Sent + TTL. "No leader" is a failure: etcd 3.4
// before 3.4.31 lets a partitioned member answer renewals it has no right
// to. A lease etcd no longer knows fails with ErrLost.
func (l *Lease) Renew(ctx context.Context, until time.Duration) (agent.Renewal, error) {
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), until-agent.Now())
	defer cancel()
	sent := agent.Now()
	resp, err := l.c.cli.KeepAliveOnce(ctx, l.id)
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		return agent.Renewal{}, fmt.Errorf("%w: etcd says it has ended", ErrLost)
	case err != nil:
		return agent.Renewal{}, l.c.failed("renew the lease", err)
	}
	return agent.Renewal{Sent: sent, TTL: time.Duration(resp.TTL) * time.Second}, nil
}

// Revoke ends the lease, which deletes the lock key, so that a waiter on
// another host starts at once rather than after the TTL. A lease etcd no
// longer knows is no error.
func (l *Lease) Revoke() error {
	if err := l.c.revoke(l.id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return l.c.failed("revoke the lease", err)
	}
	return nil
}
