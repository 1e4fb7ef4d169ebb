package lease

import (
	"context"
	"errors"
	"time"
)

// Report is what check, status and wait say about the lock key.
type Report struct {
	Key          string `json:"key"`
	State        string `json:"state"` // free, held, unknown
	Host         string `json:"host,omitempty"`
	PID          int    `json:"pid,omitempty"`
	BootID       string `json:"boot_id,omitempty"`
	Datadir      string `json:"datadir,omitempty"`
	Since        string `json:"since,omitempty"`
	FencingToken int64  `json:"fencing_token,omitempty"`
	Error        string `json:"error,omitempty"`
}

// Inspect asks etcd who holds cfg's key, through an agent of its own.
// Nothing is held or written.
func Inspect(cfg Config) *Report {
	a, err := StartAgent(cfg)
	if err != nil {
		return &Report{Key: cfg.Key, State: "unknown", Error: err.Error()}
	}
	defer a.Close()
	h, err := a.Holder(context.Background())
	return NewReport(cfg.Key, h, err)
}

// NewReport describes the holder h of key found (nil: free), or the error.
func NewReport(key string, h *Holder, err error) *Report {
	r := &Report{Key: key, State: "free"}
	switch {
	case err != nil:
		r.State, r.Error = "unknown", err.Error()
	case h != nil:
		r.State, r.Host, r.PID, r.BootID, r.Datadir = "held", h.Host, h.PID, h.BootID, h.DataDir
		r.Since, r.FencingToken = h.Started.Format(time.RFC3339), h.Token
	}
	return r
}

// A Waiter watches the lock key for wait: one agent for the whole wait, and
// etcd's watch rather than a look every so often.
type Waiter struct {
	a *Agent
}

// NewWaiter starts the agent for cfg.
func NewWaiter(cfg Config) (*Waiter, error) {
	a, err := StartAgent(cfg)
	if err != nil {
		return nil, err
	}
	return &Waiter{a: a}, nil
}

// Close ends the waiter's agent.
func (w *Waiter) Close() { w.a.Close() }

// Wait blocks until the key is held (held) or free, or until until (zero:
// no end). It returns nil once the key is as wanted; etcd unavailable, or
// the end, is an error after a pause, for the caller to look again.
func (w *Waiter) Wait(held bool, until time.Time) error {
	ctx := context.Background()
	if !until.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, until)
		defer cancel()
	}
	_, err := w.a.WaitFor(ctx, held)
	var ue *UnavailableError
	if errors.As(err, &ue) {
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	return err
}
