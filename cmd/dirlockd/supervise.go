package main

import (
	"context"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/eintr"
	"github.com/dirlockd/dirlockd/internal/notify"
)

// exit is a process of the tree that dirlockd reaped.
type exit struct {
	pid int
	ws  unix.WaitStatus
}

// supervise runs until the last process of the server's tree has exited,
// and returns run's exit status. Nothing in this loop touches the storage:
// the interlock's Keeper does, on its own goroutine.
func (r *runner) supervise(sigs chan os.Signal, nl *notify.Listener) int {
	exits := make(chan exit, 16)
	go reapAll(exits)

	readyTCP := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	switch {
	case r.flags.readyTCP != "":
		go pollTCP(ctx, r.flags.readyTCP, readyTCP)
	case !r.flags.readyNotify:
		r.markReady("started")
	}
	var mainFile <-chan time.Time
	if r.flags.mainPIDFile != "" {
		t := time.NewTicker(mainPIDFilePoll)
		defer t.Stop()
		mainFile = t.C
	}
	msgs := nl.Messages()
	var leaseChanged <-chan struct{}
	if r.lease != nil {
		leaseChanged = r.lease.l.Changed()
	}
	for {
		leaseTerm, leaseKill := r.leaseTimers()
		select {
		case e, ok := <-exits:
			if !ok {
				return r.finish(r.exitCode())
			}
			r.exited(e.pid, &e.ws)
			r.helpersIfAlone()
		case pid := <-r.mainGone:
			r.mainGoneElsewhere(pid)
			r.helpersIfAlone()
		case s := <-sigs:
			sig := s.(syscall.Signal)
			switch sig {
			case syscall.SIGTERM:
				// systemd, kill and dirlockd stop ask with SIGTERM;
				// the server gets its own --stop-signal.
				r.stop(r.flags.stopSig, "signal SIGTERM")
			case syscall.SIGINT:
				r.stop(sig, "signal SIGINT")
			case syscall.SIGHUP:
				// A reload: the server gets its own --reload-signal.
				r.forward(r.flags.reloadSig)
			default:
				r.forward(sig)
			}
		case <-r.kill:
			r.killTree()
		case m, ok := <-msgs:
			if !ok {
				msgs = nil
				continue
			}
			r.notified(m)
		case <-readyTCP:
			r.markReady("tcp " + r.flags.readyTCP)
		case err := <-r.keeper.Lost():
			r.lost(err.Error())
		case <-mainFile:
			if r.readMainPIDFile() {
				mainFile = nil
			}
		case <-leaseChanged:
			r.leaseChanged()
		case <-leaseTerm:
			r.leaseTerm()
		case <-leaseKill:
			r.leaseKill()
		}
	}
}

// exited handles a process of the tree that dirlockd reaped.
func (r *runner) exited(pid int, ws *unix.WaitStatus) {
	if r.helperExited(pid, *ws) {
		return
	}
	isMain := r.main != nil && pid == r.main.pid
	if pid == r.cmdPID {
		r.cmdCode = exitCode(*ws)
		if !isMain {
			r.logExit("the command", pid, *ws)
		}
	}
	switch {
	case isMain:
		r.mainExited(ws)
	case pid != r.cmdPID:
		r.log.Debug("a process of the server's tree exited", "pid", pid, "status", describe(*ws))
	}
}

// reapAll reaps every process the kernel hands dirlockd, the server's and
// any orphan of its tree, and closes exits once dirlockd has no child left:
// the tree is gone then, and nothing can join it again.
func reapAll(exits chan<- exit) {
	defer close(exits)
	for {
		var ws unix.WaitStatus
		pid, err := eintr.Result(func() (int, error) { return unix.Wait4(-1, &ws, 0, nil) })
		if err != nil {
			return
		}
		if ws.Exited() || ws.Signaled() {
			exits <- exit{pid, ws}
		}
	}
}
