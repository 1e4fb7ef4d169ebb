package supervise

import (
	"context"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/guard"
	"github.com/dirlockd/dirlockd/internal/proc"
)

// guardState is what the supervisor keeps of a guard.
type guardState struct {
	g              guard.DeadlineGuard // a guard.Guard that is not one is a plainGuard
	stopAt, killAt time.Time           // zero: none
	why            string              // the deadlines' reason
	released       bool
}

// plainGuard is a guard without deadlines or helpers, as the supervisor
// keeps it: its guard.DeadlineGuard methods do nothing.
type plainGuard struct{ guard.Guard }

func (plainGuard) Tree(proc.Tree)                                        {}
func (plainGuard) Overdue(bool, []int)                                   {}
func (plainGuard) Helpers() []int                                        { return nil }
func (plainGuard) HelperExited(int, unix.WaitStatus) (bool, guard.Event) { return false, guard.Event{} }

// keep is what the supervisor keeps of g.
func keep(g guard.Guard) *guardState {
	if dg, ok := g.(guard.DeadlineGuard); ok {
		return &guardState{g: dg}
	}
	return &guardState{g: plainGuard{g}}
}

// at is the guard's stop deadline, or its kill deadline.
func (gs *guardState) at(kill bool) time.Time {
	if kill {
		return gs.killAt
	}
	return gs.stopAt
}

// watchGuards delivers the index of each guard whose Changed fires.
func (s *Supervisor) watchGuards(ctx context.Context) <-chan int {
	out := make(chan int)
	for i, gs := range s.guards {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-gs.g.Changed():
				}
				select {
				case <-ctx.Done():
					return
				case out <- i:
				}
			}
		}()
	}
	return out
}

// checkGuard acts on what a guard reports.
func (s *Supervisor) checkGuard(gs *guardState) {
	if gs.released {
		return // released once the tree was gone: nothing left to guard
	}
	s.act(gs, gs.g.Check())
}

// act acts on ev, from the guard gs.
func (s *Supervisor) act(gs *guardState, ev guard.Event) {
	if ev.Deadlines {
		now := s.Clock.Now()
		gs.stopAt, gs.killAt, gs.why = now.Add(ev.StopIn), now.Add(ev.KillIn), ev.Why
		s.armDeadlines()
		t := s.pinTree()
		gs.g.Tree(t)
		t.Close()
	}
	switch {
	case ev.Lost != nil && ev.Kill:
		s.killNow(gs)
	case ev.Lost != nil:
		s.lost(ev.Lost.Error())
	case ev.Stop != "" && !s.stopAsked:
		s.stop(s.StopSignal, ev.Stop)
	}
}

// armDeadlines arms the two timers at the earliest deadlines of the guards.
func (s *Supervisor) armDeadlines() {
	var stopAt, killAt time.Time
	for _, gs := range s.guards {
		if gs.released {
			continue
		}
		if !gs.stopAt.IsZero() && (stopAt.IsZero() || gs.stopAt.Before(stopAt)) {
			stopAt = gs.stopAt
		}
		if !gs.killAt.IsZero() && (killAt.IsZero() || gs.killAt.Before(killAt)) {
			killAt = gs.killAt
		}
	}
	s.stopBy, s.killBy = nil, nil
	now := s.Clock.Now()
	if !stopAt.IsZero() {
		s.stopBy = s.Clock.After(stopAt.Sub(now))
	}
	if !killAt.IsZero() {
		s.killBy = s.Clock.After(killAt.Sub(now))
	}
}

// due returns the guard whose deadline (kill or stop) is the earliest.
func (s *Supervisor) due(kill bool) *guardState {
	var first *guardState
	for _, gs := range s.guards {
		if gs.released || gs.at(kill).IsZero() {
			continue
		}
		if first == nil || gs.at(kill).Before(first.at(kill)) {
			first = gs
		}
	}
	return first
}

// guardStop fires at a guard's stop deadline: the server is stopped while
// the guard still certainly holds. A deadline that moves later does not
// undo the stop.
func (s *Supervisor) guardStop() {
	s.stopBy = nil
	gs := s.due(false)
	if s.stopAsked || gs == nil {
		return // a stop is under way; the SIGKILL timers still stand
	}
	gs.g.Overdue(false, nil)
	s.stop(s.StopSignal, gs.why)
}

// guardKill fires at a guard's kill deadline.
func (s *Supervisor) guardKill() {
	s.killBy = nil
	if gs := s.due(true); gs != nil {
		s.killNow(gs)
	}
}

// killNow SIGKILLs every process of the tree, for the guard gs: its
// deadline came, or it is lost and nothing of the server may run.
func (s *Supervisor) killNow(gs *guardState) {
	why := gs.why
	if why == "" {
		why = "guard lost"
	}
	s.beginStop(why)
	t := s.pinTree()
	defer t.Close()
	if len(t) == 0 {
		return // the tree is gone already
	}
	gs.g.Overdue(true, t.PIDs())
	t.Signal(unix.SIGKILL)
}

// feedGuards tells each guard the tree as it is now.
func (s *Supervisor) feedGuards() {
	t := s.pinTree()
	defer t.Close()
	for _, gs := range s.guards {
		gs.g.Tree(t)
	}
}

// helpers are the PIDs of our children that are not of the server's tree.
func (s *Supervisor) helpers() []int {
	var h []int
	for _, gs := range s.guards {
		h = append(h, gs.g.Helpers()...)
	}
	return h
}

// isHelper reports whether pid is one of the guards' helpers.
func (s *Supervisor) isHelper(pid int) bool {
	for _, h := range s.helpers() {
		if pid != 0 && h == pid {
			return true
		}
	}
	return false
}

// helpersIfAlone releases the guards that have helpers once those are our
// only children left: the server's tree is gone then. Their exits let
// reapAll see that nothing is left; the other guards are released after.
func (s *Supervisor) helpersIfAlone() {
	var with []*guardState
	for _, gs := range s.guards {
		if !gs.released && len(gs.g.Helpers()) > 0 {
			with = append(with, gs)
		}
	}
	if len(with) == 0 {
		return
	}
	for _, k := range proc.Children(selfPID()) {
		if !s.isHelper(k) {
			return
		}
	}
	for i := len(with) - 1; i >= 0; i-- {
		s.release(with[i])
	}
}

// helperExited handles the exit of a guard's helper, and reports whether
// pid was one.
func (s *Supervisor) helperExited(pid int, ws unix.WaitStatus) bool {
	for _, gs := range s.guards {
		if mine, ev := gs.g.HelperExited(pid, ws); mine {
			if !gs.released {
				s.act(gs, ev)
			}
			return true
		}
	}
	return false
}

// release releases a guard, once.
func (s *Supervisor) release(gs *guardState) error {
	if gs.released {
		return nil
	}
	gs.released = true
	s.armDeadlines()
	return gs.g.Release()
}
