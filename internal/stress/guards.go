package stress

import (
	"context"
	"fmt"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/lease"
	"github.com/dirlockd/dirlockd/internal/supervise"
)

// guards hold the directory for one hold through the guards dirlockd run
// holds it with, so that stress tests the code a server relies on: the
// local interlock (supervise.LocalGuard) and, with --etcd, the lease
// (lease.Guard), taken in that order, waiting as long as it takes, and
// released in reverse.
type guards struct {
	dir   string
	local *supervise.LocalGuard
	lease *lease.Guard // nil: none
}

func newGuards(dir string, opts interlock.Options, ls *lease.Guard) *guards {
	opts.Wait = -1
	return &guards{dir: dir, local: supervise.NewLocalGuard(dir, opts, nil), lease: ls}
}

// acquire takes the interlock, then the lease; if the lease fails, the
// interlock is released.
func (g *guards) acquire(ctx context.Context) error {
	if err := g.local.Acquire(ctx); err != nil {
		return err
	}
	if g.lease == nil {
		return nil
	}
	if err := g.lease.Acquire(ctx, g.dir, -1); err != nil {
		g.local.Release()
		return err
	}
	return nil
}

// token is the hold's record token.
func (g *guards) token() string { return g.local.Lock().Record().Token }

// fence is the hold's fencing token, 0 without a lease.
func (g *guards) fence() int64 {
	if g.lease == nil {
		return 0
	}
	return g.lease.Lease().Token()
}

// release revokes the lease, then releases the interlock.
func (g *guards) release() error {
	var err error
	if g.lease != nil {
		err = g.lease.Revoke()
	}
	if rerr := g.local.Release(); rerr != nil && err == nil {
		err = fmt.Errorf("release %s: %w", g.dir, rerr)
	}
	return err
}
