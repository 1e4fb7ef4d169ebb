// Package supervise runs a server's whole process tree under guards that
// hold its data directory, and holds them until the last process of the
// tree has exited: dirlockd run's supervisor.
//
// A Supervisor is configured in its fields, as os/exec's Cmd is, and run
// once (Run). It starts the command, makes itself the reaper of the tree
// (tree.go), passes signals on (signals.go), follows the server's main
// process (mainprocess.go) and readiness (readiness.go), stops the server
// when asked, when a guard is lost or when a guard's deadline comes
// (stop.go), and once the tree is gone releases the guards in the reverse
// of their order. Everything happens in one select loop on one goroutine;
// a guard's own work (storage, etcd) runs on goroutines and processes of
// its own and reaches the loop as an event (guard.Guard). The local interlock's
// guard is here (LocalGuard, localguard.go), the lease's in package lease.
package supervise

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/eintr"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/guard"
	"github.com/dirlockd/dirlockd/internal/notify"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
)

// Record fields the supervisor keeps in the holder's record.
const (
	ChildPIDKey = "child_pid" // the command it started
	MainPIDKey  = "main_pid"  // the server's main process, while there is one
)

// A Recorder keeps the holder's record: its status and extra fields. It
// must not block (the local guard writes on a goroutine of its own).
type Recorder interface {
	SetStatus(pidfile.Status)
	SetExtra(key, value string)
}

// A Supervisor runs one server. Its fields are its configuration; set them
// before Run, and do not change them after.
type Supervisor struct {
	Path  string    // the command's executable
	Args  []string  // the command line, Args[0] the command's name
	Env   []string  // the environment; the guards' variables and NOTIFY_SOCKET are added
	Files []uintptr // descriptors 3, 4... of the command

	Log    *slog.Logger
	Record Recorder
	Guards []guard.Guard // acquired, in order; released in reverse once the tree is gone

	Signals <-chan os.Signal // the signals to act on (see Run)
	Early   []syscall.Signal // signals that came before Run, for the server once it is ready

	Notify   *notify.Listener // the server's NOTIFY_SOCKET
	Upstream string           // our own NOTIFY_SOCKET, when systemd supervises us

	StopSignal   syscall.Signal // the server's stop signal (--stop-signal)
	ReloadSignal syscall.Signal // what SIGHUP becomes (--reload-signal)
	StopTimeout  time.Duration  // from the first stop request to SIGKILL
	KillMode     KillMode
	SignalGroup  bool   // signals passed on reach the main process's group
	OnLost       string // "shutdown" or "log": what a guard's loss does
	ReadyTCP     string // ready once this address accepts a connection
	ReadyNotify  bool   // ready at READY=1
	MainPIDFile  string // names the main process once written

	Clock Clock // nil: the system's

	cmdPID int // the command it started

	// main is the server's main process: the one signals go to first and
	// whose exit status Run reports. It is the command while it lives (or
	// until MainPIDFile names another), then the only process left under
	// us, if exactly one is. nil when there is none.
	main     *proc.Pinned
	mainGone chan int // a main process that is not our child has exited
	mainFrom string   // what made it the main process, for logs
	cmdCode  int      // the command's exit status, once it has exited
	mainCode *int     // the last main process's exit status, if it was not the command
	badMain  string   // why MainPIDFile was last refused, to warn once for each reason

	early     []syscall.Signal
	ready     bool
	stopping  bool             // the record says stopping (we, or the server itself, began to stop)
	stopAsked bool             // a stop has begun: the first stop timer stands
	kill      <-chan time.Time // armed by the first stop request: SIGKILL when it fires
	rejects   rejectLog        // notifications from outside the server's tree

	guards         []*guardState
	stopBy, killBy <-chan time.Time // the earliest deadlines of the guards; nil for none
}

// exit is a process of the tree that the supervisor reaped.
type exit struct {
	pid int
	ws  unix.WaitStatus
}

// Run starts the server and supervises it until the last process of its
// tree has exited, then releases the guards and returns run's exit status:
// the last main process's, or the command's; 126 or 127 if the command
// cannot be executed. The guards must be acquired already. Of the signals,
// SIGTERM stops the server with StopSignal, SIGINT with SIGINT, SIGHUP
// becomes ReloadSignal, the others are passed on.
func (s *Supervisor) Run() int {
	if s.Clock == nil {
		s.Clock = systemClock{}
	}
	s.early = s.Early
	for _, g := range s.Guards {
		s.guards = append(s.guards, keep(g))
		for k, v := range g.Fields() {
			s.Record.SetExtra(k, v)
		}
	}
	for _, gs := range s.guards {
		s.checkGuard(gs) // arm the deadlines before the server starts
	}
	if err := proc.BecomeSubreaper(); err != nil {
		s.Log.Error("cannot become the reaper of the server's tree", "err", err)
		return s.finish(exitcode.Internal)
	}
	if code := s.start(); code != 0 {
		return s.finish(code)
	}
	s.feedGuards()
	return s.loop()
}

// start launches the server.
func (s *Supervisor) start() int {
	env := append(slices.Clone(s.Env), "NOTIFY_SOCKET="+s.Notify.Path())
	for _, g := range s.Guards {
		env = append(env, g.Env()...)
	}
	// syscall.ForkExec rather than os/exec: os.StartProcess first forks a
	// throw-away child to learn whether pidfds work, a fork on every start
	// that a supervisor, which pins its tree with pidfd_open anyway, does
	// not need.
	//
	// Its own process group: a terminal's Ctrl-C reaches dirlockd alone,
	// which passes it on once; SignalGroup can then reach the group.
	// No parent-death signal: if dirlockd dies, the server must live on and
	// keep the lock.
	pid, err := syscall.ForkExec(s.Path, s.Args, &syscall.ProcAttr{
		Env:   env,
		Files: append([]uintptr{0, 1, 2}, s.Files...),
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return ExecFailed(s.Log, s.Args[0], err)
	}
	s.cmdPID = pid
	if m, ok := proc.PinChild(s.cmdPID, s.cmdPID); ok {
		s.setMain(m, "the command")
	}
	s.Record.SetExtra(ChildPIDKey, strconv.Itoa(s.cmdPID))
	s.Log.Info("started the server", "pid", s.cmdPID, "command", strings.Join(s.Args, " "))
	return 0
}

// loop runs until the last process of the server's tree has exited, and
// returns run's exit status. Nothing in it touches the storage or etcd:
// the guards do, on goroutines and processes of their own.
func (s *Supervisor) loop() int {
	exits := make(chan exit, 16)
	go reapAll(exits)

	readyTCP := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	switch {
	case s.ReadyTCP != "":
		go pollTCP(ctx, s.ReadyTCP, readyTCP)
	case !s.ReadyNotify:
		s.markReady("started")
	}
	var mainFile <-chan time.Time
	if s.MainPIDFile != "" {
		t := time.NewTicker(mainPIDFilePoll)
		defer t.Stop()
		mainFile = t.C
	}
	msgs := s.Notify.Messages()
	changed := s.watchGuards(ctx)
	for {
		select {
		case e, ok := <-exits:
			if !ok {
				return s.finish(s.exitCode())
			}
			s.exited(e.pid, &e.ws)
			s.helpersIfAlone()
		case pid := <-s.mainGone:
			s.mainGoneElsewhere(pid)
			s.helpersIfAlone()
		case sig := <-s.Signals:
			switch sig := sig.(syscall.Signal); sig {
			case syscall.SIGTERM:
				// systemd, kill and dirlockd stop ask with SIGTERM;
				// the server gets its own StopSignal.
				s.stop(s.StopSignal, "signal SIGTERM")
			case syscall.SIGINT:
				s.stop(sig, "signal SIGINT")
			case syscall.SIGHUP:
				// A reload: the server gets its own ReloadSignal.
				s.forward(s.ReloadSignal)
			default:
				s.forward(sig)
			}
		case <-s.kill:
			s.killTree()
		case m, ok := <-msgs:
			if !ok {
				msgs = nil
				continue
			}
			s.notified(m)
		case <-readyTCP:
			s.markReady("tcp " + s.ReadyTCP)
		case <-mainFile:
			if s.readMainPIDFile() {
				mainFile = nil
			}
		case i := <-changed:
			s.checkGuard(s.guards[i])
		case <-s.stopBy:
			s.guardStop()
		case <-s.killBy:
			s.guardKill()
		}
	}
}

// exited handles a process of the tree that the supervisor reaped.
func (s *Supervisor) exited(pid int, ws *unix.WaitStatus) {
	if s.helperExited(pid, *ws) {
		return
	}
	isMain := s.main != nil && pid == s.main.PID
	if pid == s.cmdPID {
		s.cmdCode = ExitCode(*ws)
		if !isMain {
			s.logExit("the command", pid, *ws)
		}
	}
	switch {
	case isMain:
		s.mainExited(ws)
	case pid != s.cmdPID:
		s.Log.Debug("a process of the server's tree exited", "pid", pid, "status", proc.Describe(*ws))
	}
}

// finish releases the guards, in the reverse of their order, and returns
// code. By then the server's tree is gone, so the record's "stopped" proves
// that nobody is left. A guard that cannot release makes a status of 0
// dirlockd's internal error.
func (s *Supervisor) finish(code int) int {
	s.rejects.stop()
	for i := len(s.guards) - 1; i >= 0; i-- {
		if err := s.release(s.guards[i]); err != nil && code == 0 {
			code = exitcode.Internal
		}
	}
	return code
}

// reapAll reaps every process the kernel hands the supervisor, the
// server's and any orphan of its tree, and closes exits once it has no
// child left: the tree is gone then, and nothing can join it again.
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
