package main

import (
	"github.com/dirlockd/dirlockd/internal/proc"
)

// The server's tree is every process that descends from dirlockd run.
// dirlockd makes itself a child subreaper (PR_SET_CHILD_SUBREAPER), so a
// descendant whose parent exits is reparented to dirlockd rather than to
// init: a server that forks and exits, or daemonizes with setsid and a
// double fork, stays in the tree. The tree is therefore empty exactly when
// dirlockd has no child left, which is what wait4 reports with ECHILD, and
// nothing else can join it once it is empty. The children of dirlockd that
// are not of the tree are the helpers of run --etcd, the fence process
// (lease.Watchdog) and the etcd agent (runlease.go): every listing of the tree
// leaves them out, and they are told to exit once they are dirlockd's only
// children, so that ECHILD still comes when the tree is gone.
//
// Processes of the tree are signalled only through pidfds opened while they
// were provably in it, never by a bare PID that might have been recycled.

// member is a process of the tree, pinned by a pidfd; pinned is a snapshot
// of the tree (proc.Tree).
type (
	member = proc.Pinned
	pinned = proc.Tree
)

// pinTree lists the live processes of the tree and pins each with a pidfd.
// except are children of ours that are not of the server's tree (the fence
// and the etcd agent of run --etcd).
func pinTree(except ...int) pinned { return proc.PinBelow(proc.Self(), except...) }
