package main

import (
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/supervise"
	"github.com/dirlockd/dirlockd/pidfile"
)

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
	mode         supervise.KillMode
}

func recordedSignals(rec *pidfile.Record) serverSignals {
	s := serverSignals{stop: unix.SIGTERM, reload: unix.SIGHUP, mode: supervise.ControlGroup}
	if rec == nil {
		return s
	}
	if sig, err := parseSignal(rec.Extra[stopSignalKey]); err == nil {
		s.stop = sig
	}
	if sig, err := parseSignal(rec.Extra[reloadSignalKey]); err == nil {
		s.reload = sig
	}
	if m, err := supervise.ParseKillMode(rec.Extra[killModeKey]); err == nil {
		s.mode = m
	}
	return s
}
