package main

import (
	"fmt"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/pidfile"
)

// A killMode says which processes of the server's tree a stop signals, with
// the meaning of systemd's KillMode= (systemd.kill(5)).
type killMode string

const (
	// killControlGroup: the stop signal goes to every process of the
	// tree, then SIGKILL to every one left after --stop-timeout.
	// systemd's default, and dirlockd's: a database whose start script
	// ignores SIGTERM (mysqld_safe) still gets it itself.
	killControlGroup killMode = "control-group"
	// killMixed: the stop signal goes to the main process alone (which
	// stops its own children: PostgreSQL's postmaster, Apache), SIGTERM
	// to whatever is left when it has exited, and SIGKILL to every
	// process left after --stop-timeout.
	killMixed killMode = "mixed"
	// killProcess: the stop signal, and SIGKILL after --stop-timeout, go
	// to the main process alone; the rest of the tree is left to exit on
	// its own, and dirlockd holds the directory until it has.
	killProcess killMode = "process"
)

var killModes = []string{string(killControlGroup), string(killMixed), string(killProcess)}

func parseKillMode(s string) (killMode, error) {
	switch m := killMode(s); m {
	case killControlGroup, killMixed, killProcess:
		return m, nil
	}
	return "", fmt.Errorf("%q: want control-group, mixed or process", s)
}

// The record keys with which run tells stop, reload and status how its
// server is to be stopped and reloaded. A record without them (written by
// an older dirlockd, or by another program using package interlock) means
// the defaults: SIGTERM, SIGHUP, control-group.
const (
	stopSignalKey   = "stop_signal"
	reloadSignalKey = "reload_signal"
	killModeKey     = "kill_mode"
)

// serverSignals are how the record rec says its server is stopped and
// reloaded.
type serverSignals struct {
	stop, reload syscall.Signal
	mode         killMode
}

func recordedSignals(rec *pidfile.Record) serverSignals {
	s := serverSignals{stop: unix.SIGTERM, reload: unix.SIGHUP, mode: killControlGroup}
	if rec == nil {
		return s
	}
	if sig, err := parseSignal(rec.Extra[stopSignalKey]); err == nil {
		s.stop = sig
	}
	if sig, err := parseSignal(rec.Extra[reloadSignalKey]); err == nil {
		s.reload = sig
	}
	if m, err := parseKillMode(rec.Extra[killModeKey]); err == nil {
		s.mode = m
	}
	return s
}

// signalName is sig as the record and the logs write it: "SIGINT", or its
// number for a signal without a name.
func signalName(sig syscall.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return n
	}
	return strconv.Itoa(int(sig))
}
