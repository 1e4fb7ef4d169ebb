// Package interlock guarantees that at most one process tree works in a data
// directory at a time.
//
// Two kernel facts witness a holder: a lock on the pidfile inside the
// directory (package pidfile), and the attach count of a SysV segment whose
// header names the directory (package shm). A third, the acquisition token in
// the environment of the processes a holder starts, finds servers that closed
// every inherited descriptor and exec'd away their attachment. Acquire takes
// the directory only when all of them agree that nobody is left; the PID
// written in the pidfile is never trusted on its own.
//
// The decision procedure, its inputs and its outcomes are laid out in
// docs/design.md.
package interlock

// TokenEnv is the environment variable through which a holder's children
// carry its acquisition token; Acquire refuses while any process has the
// previous holder's token in it.
const TokenEnv = "DIRLOCKD_TOKEN"

// PidfileEnv is the environment variable through which a holder's children
// carry the pidfile's path. It witnesses them even when the record that
// named their token has been lost (emptied, deleted, torn by a crash).
const PidfileEnv = "DIRLOCKD_PIDFILE"
