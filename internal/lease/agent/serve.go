package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/dirlockd/dirlockd/internal/lease"
)

// Serve is the agent: it answers the requests of package lease read from in,
// one JSON object a line, with replies written to out, until in ends. Each
// request but dial and cancel runs on its own, so renewals overlap and a
// waiting acquire does not hold up the rest. It renews only when asked and
// revokes only when asked: at the end of in (its parent gone) it leaves the
// lease it holds to run out, since the parent's server may still be running
// until its fence kills it, and a revoke would hand the key to another host
// before that.
func Serve(in io.Reader, out io.Writer) error {
	s := &server{out: out, pending: map[int64]context.CancelFunc{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var wg sync.WaitGroup
	for sc.Scan() {
		var req lease.Request
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return fmt.Errorf("bad request %q: %w", truncate(sc.Bytes(), 80), err)
		}
		switch req.Op {
		case lease.OpDial:
			s.reply(s.dial(req))
			continue
		case lease.OpCancel:
			s.mu.Lock()
			if c := s.pending[req.Ref]; c != nil {
				c()
			}
			s.mu.Unlock()
			continue
		}
		rctx, rcancel := context.WithCancel(ctx)
		s.mu.Lock()
		s.pending[req.ID] = rcancel
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep := s.handle(rctx, req)
			s.mu.Lock()
			delete(s.pending, req.ID)
			s.mu.Unlock()
			rcancel()
			s.reply(rep)
		}()
	}
	cancel()
	wg.Wait()
	if s.c != nil {
		s.c.Close()
	}
	return sc.Err()
}

type server struct {
	wmu sync.Mutex
	out io.Writer

	mu      sync.Mutex
	pending map[int64]context.CancelFunc
	c       *Client // after dial
	l       *Lease  // the lease held, if any
}

func (s *server) reply(rep lease.Reply) {
	b, _ := json.Marshal(rep)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.out.Write(append(b, '\n'))
}

func (s *server) dial(req lease.Request) lease.Reply {
	rep := lease.Reply{ID: req.ID}
	if req.Config == nil {
		rep.Err = lease.EncodeError(errors.New("dial without a configuration"))
		return rep
	}
	c, err := Dial(*req.Config)
	if err != nil {
		rep.Err = lease.EncodeError(err)
		return rep
	}
	s.mu.Lock()
	if s.c != nil {
		s.c.Close()
	}
	s.c = c
	s.mu.Unlock()
	return rep
}

func (s *server) handle(ctx context.Context, req lease.Request) lease.Reply {
	rep := lease.Reply{ID: req.ID}
	s.mu.Lock()
	c, l := s.c, s.l
	s.mu.Unlock()
	var err error
	switch {
	case c == nil:
		err = errors.New("not connected: dial first")
	case req.Op == lease.OpHolder:
		rep.Holder, err = c.Holder(ctx)
	case req.Op == lease.OpWatch:
		rep.Holder, err = c.WaitFor(ctx, req.Want == "held")
	case req.Op == lease.OpAcquire:
		if l != nil {
			err = errors.New("a lease is held already: revoke it first")
			break
		}
		if req.Identity == nil {
			err = errors.New("acquire without an identity")
			break
		}
		if l, err = c.Acquire(ctx, *req.Identity, req.Wait); err == nil {
			s.mu.Lock()
			s.l = l
			s.mu.Unlock()
			g := l.Granted()
			rep.Lease = &g
		}
	case l == nil:
		err = fmt.Errorf("%w: no lease is held", ErrLost)
	case req.Op == lease.OpRenew:
		var r lease.Renewal
		if r, err = l.Renew(ctx, req.Until); err == nil {
			rep.Renewal = &r
		}
	case req.Op == lease.OpGone:
		err = l.Gone(ctx)
	case req.Op == lease.OpRevoke:
		s.mu.Lock()
		if s.l == l {
			s.l = nil
		}
		s.mu.Unlock()
		err = l.Revoke(ctx)
	default:
		err = fmt.Errorf("unknown request %q", req.Op)
	}
	rep.Err = lease.EncodeError(err)
	return rep
}
