package lease

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
)

// ErrLost says a lease held before is no longer known to be: its deadline
// passed without a renewal, or etcd said it had ended. It is never held
// again.
var ErrLost = errors.New("the lease is lost")

// HeldError says the lock key is held by another holder.
type HeldError struct {
	Key    string
	Holder Holder
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
// permission on the key, failed authentication, or a key that is not a
// dirlockd lock. Problem says what, Fix what to do.
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

// failed classifies an error of an etcd request made to do what.
func (c *Client) failed(what string, err error) error {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		switch ee.Code() {
		case codes.PermissionDenied:
			return &RefusedError{Key: c.cfg.Key, Problem: "cannot " + what, Err: err,
				Fix: "grant the etcd user readwrite on the key: etcdctl role grant-permission ROLE readwrite " + c.cfg.Key}
		case codes.Unauthenticated, codes.InvalidArgument, codes.FailedPrecondition:
			return &RefusedError{Key: c.cfg.Key, Problem: "cannot " + what, Err: err,
				Fix: "check --user and the etcd user's password and roles"}
		}
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return &UnavailableError{Endpoints: c.cfg.Endpoints, Err: fmt.Errorf("%s: %w", what, err)}
}
