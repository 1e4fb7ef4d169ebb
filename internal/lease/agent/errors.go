package agent

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"

	"github.com/dirlockd/dirlockd/internal/lease"
)

// The errors are the agent package's, which the agent's parent decodes
// from the wire.
var ErrLost = lease.ErrLost

type (
	HeldError        = lease.HeldError
	UnavailableError = lease.UnavailableError
	RefusedError     = lease.RefusedError
)

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
				Fix: "check --etcd-user and the etcd user's password and roles"}
		}
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return &UnavailableError{Endpoints: c.cfg.Endpoints, Err: fmt.Errorf("%s: %w", what, err)}
}
