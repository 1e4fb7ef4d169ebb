package supervise

import "github.com/dirlockd/dirlockd/internal/proc"

// The server's tree is every process that descends from the supervisor.
// It makes itself a child subreaper (PR_SET_CHILD_SUBREAPER), so a
// descendant whose parent exits is reparented to the supervisor rather than to
// init: a server that forks and exits, or daemonizes with setsid and a
// double fork, stays in the tree. The tree is therefore empty exactly when
// the supervisor has no child left, which is what wait4 reports with
// ECHILD, and nothing else can join it once it is empty. Its children that
// are not of the tree are the guards' helpers (guard.DeadlineGuard.Helpers: the lease's
// watchdog and etcd agent): every listing of the tree leaves them out, and
// their guards are released once they are its only children, so that
// ECHILD still comes when the tree is gone.
//
// Processes of the tree are signalled only through pidfds opened while they
// were provably in it, never by a bare PID that might have been recycled.

// pinTree lists the live processes of the server's tree and pins each
// with a pidfd (proc.PinBelow), leaving out the guards' helpers.
func (s *Supervisor) pinTree() proc.Tree { return proc.PinBelow(proc.Self(), s.helpers()...) }
