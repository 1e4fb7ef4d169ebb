package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dirlockd/dirlockd/internal/lease/agent"
)

// Acquire takes the lock key for id. It grants a new lease, then puts the
// key under it in a transaction that succeeds only if the key does not
// exist, so that two starters can never both succeed; the key's create
// revision is the fencing token. A key held by another holder fails with a
// *HeldError, unless wait is set: then Acquire blocks, watching the key,
// until it is deleted (its holder released it or its lease expired) and
// tries again, until ctx ends; etcd unavailable meanwhile (an election, a
// member restarting) does not end the wait. Otherwise etcd not answering
// within the dial timeout fails with an *UnavailableError, a refusal with a
// *RefusedError.
//
// The returned Lease is renewed only when its holder asks (Renew).
func (c *Client) Acquire(ctx context.Context, id Identity, wait bool) (*Lease, error) {
	val, err := json.Marshal(id)
	if err != nil {
		return nil, err
	}
	for {
		l, held, err := c.try(ctx, val)
		if wait && c.retry(ctx, err) {
			continue
		}
		if err != nil || held == nil {
			return l, err
		}
		if !wait {
			return nil, &HeldError{Key: c.cfg.Key, Holder: held.Holder}
		}
		clean, err := c.waitDeleted(ctx, held.rev)
		if err == nil && !clean && !held.Released {
			err = c.distrust(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("waiting for lease key %q: %w (%w)", c.cfg.Key, ctx.Err(), &HeldError{Key: c.cfg.Key, Holder: held.Holder})
			}
			if !c.retry(ctx, err) {
				return nil, err
			}
		}
	}
}

// distrust waits a TTL after the key was deleted without its holder's
// release mark: its lease ended by expiry, or by etcd revoking it early (an
// etcd 3.4 leader that was paused and resumes can revoke, with its stale
// expiry times, leases that the new leader still renews). Its holder stops
// by its own deadline, the send time of a renewal it made before now, + its
// TTL: one TTL from now it has, whatever etcd did (holders of one key use
// one TTL). After a clean release (revoke by the holder, its tree gone) the
// waiter starts at once.
func (c *Client) distrust(ctx context.Context) error {
	select {
	case <-time.After(c.cfg.TTL):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retry reports, after a pause, whether a waiting Acquire should try again
// after err: etcd unavailable for a moment (an election, a member
// restarting, endpoints flapping) does not end a wait; ctx does.
func (c *Client) retry(ctx context.Context, err error) bool {
	var ue *UnavailableError
	if !errors.As(err, &ue) || ctx.Err() != nil {
		return false
	}
	select {
	case <-time.After(500 * time.Millisecond):
		return true
	case <-ctx.Done():
		return false
	}
}

// found is the holder a failed attempt found, and the revision at which it
// was read.
type found struct {
	Holder
	rev int64
}

// try makes one attempt: a new lease, and the transaction.
func (c *Client) try(ctx context.Context, val []byte) (*Lease, *found, error) {
	rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), dialTimeout(&c.cfg))
	defer cancel()
	sent := agent.Now()
	g, err := c.cli.Grant(rctx, int64(c.cfg.TTL/time.Second))
	if err != nil {
		return nil, nil, c.failed("grant a lease", err)
	}
	key := c.cfg.Key
	resp, err := c.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(val), clientv3.WithLease(g.ID))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err == nil && resp.Succeeded {
		l := &Lease{c: c, id: g.ID, token: resp.Header.Revision, ttl: time.Duration(g.TTL) * time.Second, sent: sent, val: val}
		return l, nil, nil
	}
	c.revoke(g.ID)
	if err != nil {
		return nil, nil, c.failed("put the lock key", err)
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		// Deleted between the compare and the get: a transaction is
		// atomic, so this cannot be; try again all the same.
		return nil, &found{rev: resp.Header.Revision}, nil
	}
	h, err := c.holder(kvs[0].Value, kvs[0].CreateRevision, kvs[0].Lease)
	if err != nil {
		return nil, nil, err
	}
	return nil, &found{Holder: *h, rev: resp.Header.Revision}, nil
}

// revoke ends a lease, best effort: a lease that is not revoked expires
// after its TTL anyway.
func (c *Client) revoke(id clientv3.LeaseID) error {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout(&c.cfg))
	defer cancel()
	_, err := c.cli.Revoke(ctx, id)
	return err
}

// waitDeleted blocks until the key is deleted after revision rev: etcd's
// own way of waiting, a watch, not polling. clean says whether its holder
// marked it released first.
func (c *Client) waitDeleted(ctx context.Context, rev int64) (clean bool, err error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for ev := range c.cli.Watch(wctx, c.cfg.Key, clientv3.WithRev(rev+1)) {
		if err := ev.Err(); err != nil {
			return false, c.failed("watch the lock key", err)
		}
		for _, e := range ev.Events {
			switch e.Type {
			case mvccpb.DELETE:
				return clean, nil
			case mvccpb.PUT:
				var id Identity
				clean = json.Unmarshal(e.Kv.Value, &id) == nil && id.Released
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	return false, errors.New("the watch on the lock key ended") // the client was closed
}

// WaitFor blocks until the key is held (held true; it returns the holder)
// or free (held false), reading it once and then watching it: etcd's way
// of waiting, not polling. etcd unavailable fails, as for Holder.
func (c *Client) WaitFor(ctx context.Context, held bool) (*Holder, error) {
	for {
		rctx, cancel := context.WithTimeout(ctx, dialTimeout(&c.cfg))
		resp, err := c.cli.Get(rctx, c.cfg.Key)
		cancel()
		if err != nil {
			return nil, c.failed("read the lock key", err)
		}
		var h *Holder
		if len(resp.Kvs) > 0 {
			kv := resp.Kvs[0]
			if h, err = c.holder(kv.Value, kv.CreateRevision, kv.Lease); err != nil {
				return nil, err
			}
		}
		if (h != nil) == held {
			return h, nil
		}
		if err := c.waitEvent(ctx, resp.Header.Revision, held); err != nil {
			return nil, err
		}
	}
}

// waitEvent blocks until the key is put (put true) or deleted after
// revision rev.
func (c *Client) waitEvent(ctx context.Context, rev int64, put bool) error {
	want := mvccpb.DELETE
	if put {
		want = mvccpb.PUT
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for ev := range c.cli.Watch(wctx, c.cfg.Key, clientv3.WithRev(rev+1)) {
		if err := ev.Err(); err != nil {
			return c.failed("watch the lock key", err)
		}
		for _, e := range ev.Events {
			if e.Type == want {
				return nil
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("the watch on the lock key ended") // the client was closed
}
