package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dirlockd/dirlockd/internal/lease"
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
		if err != nil {
			if wait && c.retry(ctx, err) {
				continue
			}
			return nil, err
		}
		if held == nil {
			return l, nil
		}
		if !wait {
			return nil, &HeldError{Key: c.cfg.Key, Holder: held.Holder}
		}
		if err := c.awaitEnd(ctx, held); err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("waiting for lease key %q: %w (%w)", c.cfg.Key, ctx.Err(), &HeldError{Key: c.cfg.Key, Holder: held.Holder})
			}
			return nil, err
		}
	}
}

// awaitEnd blocks until the key that held was read from is deleted, and a
// TTL more if its holder did not mark it released (distrust). etcd
// unavailable meanwhile does not end the wait: the watch starts again on
// the next endpoint, from the same revision, so that a delete it missed is
// replayed with whatever release mark came before it.
func (c *Client) awaitEnd(ctx context.Context, held *found) error {
	for {
		m, i, err := c.member()
		if err == nil {
			var clean bool
			clean, err = c.waitDeleted(ctx, m, held.rev, true)
			switch {
			case err == nil && (clean || held.Released):
				return nil
			case err == nil, errors.Is(err, rpctypes.ErrCompacted):
				// An unclean end, or one whose history is compacted away.
				return c.distrust(ctx)
			}
		}
		c.rotate(i)
		if !c.retry(ctx, err) {
			return err
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

// try makes one attempt, on one endpoint (member): a new lease, and the
// transaction. Spread over the endpoints by the balancer, an attempt's
// requests would each go to another member, and with as many requests to
// an attempt as endpoints, every transaction to the same one: a member cut
// off from the majority ("etcdserver: no leader") then fails every attempt
// however long the wait (issue 19). Pinned, an attempt that fails moves
// the next one to the next endpoint (rotate).
func (c *Client) try(ctx context.Context, val []byte) (*Lease, *found, error) {
	m, i, err := c.member()
	if err != nil {
		c.rotate(i)
		return nil, nil, err
	}
	rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), dialTimeout(&c.cfg))
	defer cancel()
	sent := lease.Now()
	g, err := m.Grant(rctx, int64(c.cfg.TTL/time.Second))
	if err != nil {
		c.rotate(i)
		return nil, nil, c.failed("grant a lease", err)
	}
	key := c.cfg.Key
	resp, err := m.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(val), clientv3.WithLease(g.ID))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err == nil && resp.Succeeded {
		l := &Lease{c: c, id: g.ID, token: resp.Header.Revision, ttl: time.Duration(g.TTL) * time.Second, sent: sent, val: val}
		return l, nil, nil
	}
	if err != nil {
		// No answer may still have been committed: revoke the lease, in
		// case it holds the key, but behind the next attempt rather than
		// before it, on whichever endpoint answers. A member without a
		// leader refused the transaction outright; the lease, never used,
		// expires after its TTL if the revoke does not reach etcd either.
		c.rotate(i)
		go c.revoke(c.cli, g.ID)
		return nil, nil, c.failed("put the lock key", err)
	}
	c.revoke(m, g.ID) // the member just answered
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

// revoke ends a lease through cli, best effort: a lease that is not
// revoked expires after its TTL anyway.
func (c *Client) revoke(cli *clientv3.Client, id clientv3.LeaseID) error {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout(&c.cfg))
	defer cancel()
	_, err := cli.Revoke(ctx, id)
	return err
}

// waitDeleted blocks until the key is deleted after revision rev: etcd's
// own way of waiting, a watch through cli, not polling. clean says whether
// its holder marked it released first. With probe, the member watched is
// asked every second (or renewal interval) whether it still has a leader: a member cut
// off from the majority keeps a watch open and silent, and etcd cancels
// the watches of a member without a leader only after about three
// election timeouts.
func (c *Client) waitDeleted(ctx context.Context, cli *clientv3.Client, rev int64, probe bool) (clean bool, err error) {
	wctx, cancel := context.WithCancelCause(clientv3.WithRequireLeader(ctx))
	defer cancel(nil)
	if probe {
		go c.probe(wctx, cli, cancel)
	}
	probed := func() error {
		if err := context.Cause(wctx); ctx.Err() == nil && err != nil && !errors.Is(err, context.Canceled) {
			return c.failed("watch the lock key", err)
		}
		return nil
	}
	for ev := range cli.Watch(wctx, c.cfg.Key, clientv3.WithRev(rev+1)) {
		if err := ev.Err(); err != nil {
			if perr := probed(); perr != nil {
				return false, perr
			}
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
	if err := probed(); err != nil {
		return false, err
	}
	return false, errors.New("the watch on the lock key ended") // the client was closed
}

// probe reads the key through cli every renewal interval, at most every
// second, with ctx's leader requirement, and ends ctx with the cause once a
// read fails: the member has no leader (it says so at once), believes it
// leads but cannot reach a majority, or is stopped (no answer within the
// interval). A read that fails on a healthy but slow member costs nothing
// but a move: the watch starts again on the next member from the same
// revision. The cost of a probe is one read a second a waiter.
func (c *Client) probe(ctx context.Context, cli *clientv3.Client, fail context.CancelCauseFunc) {
	every := c.cfg.Renew
	if every <= 0 {
		every = c.cfg.TTL / 3
	}
	every = min(max(every, 500*time.Millisecond), time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, every)
		_, err := cli.Get(pctx, c.cfg.Key)
		cancel()
		if err != nil && ctx.Err() == nil {
			fail(fmt.Errorf("the member watched did not answer a read: %w", err))
			return
		}
	}
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
