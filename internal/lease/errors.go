package lease

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrLost says a lease held before is no longer known to be: its deadline
// passed without a renewal, or etcd said it had ended. It is never held
// again.
var ErrLost = errors.New("the lease is lost")

// ErrAgentGone says the agent process exited or closed its output: nothing
// more can be asked of etcd through it.
var ErrAgentGone = errors.New("the etcd agent (dirlockd-etcd) is gone")

// HeldError says the lock key is held by another holder.
type HeldError struct {
	Key    string `json:"key"`
	Holder Holder `json:"holder"`
}

func (e *HeldError) Error() string {
	h := e.Holder
	return fmt.Sprintf("lease key %q is held by PID %d on host %s (data directory %s) since %s, fencing token %d",
		e.Key, h.PID, h.Host, h.DataDir, h.Started.Format(time.RFC3339), h.Token)
}

// UnavailableError says etcd did not answer, or not usefully (no leader).
type UnavailableError struct {
	Endpoints []string
	Err       error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("etcd at %s is unavailable: %v", strings.Join(e.Endpoints, ","), e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// RefusedError says etcd answered but refused what dirlockd needs: no
// permission on the key, failed authentication, a key that is not a
// dirlockd lock, or a configuration it cannot use (a TLS file). Problem
// says what, Fix what to do.
type RefusedError struct {
	Key     string
	Problem string
	Fix     string
	Err     error
}

func (e *RefusedError) Error() string {
	s := fmt.Sprintf("lease key %q: %s", e.Key, e.Problem)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s + " (" + e.Fix + ")"
}

func (e *RefusedError) Unwrap() error { return e.Err }

// WireError is an error on the pipe: its kind, which the parent turns back
// into the type callers branch on, and its fields.
type WireError struct {
	Kind      string   `json:"kind"` // held, unavailable, refused, lost, canceled, deadline, other
	Msg       string   `json:"msg"`
	Key       string   `json:"key,omitempty"`
	Holder    *Holder  `json:"holder,omitempty"`
	Endpoints []string `json:"endpoints,omitempty"`
	Problem   string   `json:"problem,omitempty"`
	Fix       string   `json:"fix,omitempty"`
	Cause     string   `json:"cause,omitempty"`
}

// EncodeError is the agent's side: err as it travels.
func EncodeError(err error) *WireError {
	if err == nil {
		return nil
	}
	w := &WireError{Kind: "other", Msg: err.Error()}
	var he *HeldError
	var ue *UnavailableError
	var re *RefusedError
	switch {
	case errors.As(err, &he):
		w.Kind, w.Key, w.Holder = "held", he.Key, &he.Holder
		// A wait that ended says so around the holder.
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			w.Cause = "waited"
		}
	case errors.As(err, &ue):
		w.Kind, w.Endpoints = "unavailable", ue.Endpoints
		if ue.Err != nil {
			w.Cause = ue.Err.Error()
		}
	case errors.As(err, &re):
		w.Kind, w.Key, w.Problem, w.Fix = "refused", re.Key, re.Problem, re.Fix
		if re.Err != nil {
			w.Cause = re.Err.Error()
		}
	case errors.Is(err, ErrLost):
		w.Kind = "lost"
	case errors.Is(err, context.Canceled):
		w.Kind = "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		w.Kind = "deadline"
	}
	return w
}

// decode is the parent's side: the error again, of the type it was. ended
// is why the caller's context ended, if it did: the agent only saw its
// request canceled.
func (w *WireError) decode(ended error) error {
	switch w.Kind {
	case "held":
		he := &HeldError{Key: w.Key}
		if w.Holder != nil {
			he.Holder = *w.Holder
		}
		if w.Cause == "waited" {
			return &heldAfterWait{ended: cmp.Or(ended, context.Canceled), held: he}
		}
		return he
	case "unavailable":
		return &UnavailableError{Endpoints: w.Endpoints, Err: errors.New(w.Cause)}
	case "refused":
		re := &RefusedError{Key: w.Key, Problem: w.Problem, Fix: w.Fix}
		if w.Cause != "" {
			re.Err = errors.New(w.Cause)
		}
		return re
	case "lost":
		return fmt.Errorf("%w%s", ErrLost, strings.TrimPrefix(w.Msg, ErrLost.Error()))
	case "canceled":
		return cmp.Or(ended, context.Canceled)
	case "deadline":
		return context.DeadlineExceeded
	}
	return errors.New(w.Msg)
}

// heldAfterWait is a wait that ended while the key was held: it is both
// a *HeldError and why the wait ended.
type heldAfterWait struct {
	ended error
	held  *HeldError
}

func (e *heldAfterWait) Error() string {
	return fmt.Sprintf("waiting for lease key %q: %v (%v)", e.held.Key, e.ended, e.held)
}
func (e *heldAfterWait) Unwrap() []error { return []error{e.held, e.ended} }
