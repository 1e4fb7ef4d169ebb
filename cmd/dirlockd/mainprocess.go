package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/eintr"
	"github.com/dirlockd/dirlockd/internal/proc"
)

// setMain makes m the main process. A main process that is not our child is
// watched through its pidfd, since its exit reaches its parent, not us.
func (r *runner) setMain(m member, from string) {
	if r.main != nil {
		unix.Close(r.main.pfd)
	}
	r.main, r.mainFrom = &m, from
	r.keeper.SetExtra(mainPIDKey, strconv.Itoa(m.pid))
	if m.parent == os.Getpid() {
		return
	}
	pfd, err := unix.Dup(m.pfd)
	if err != nil {
		return
	}
	if r.mainGone == nil {
		r.mainGone = make(chan int, 1)
	}
	go func(pid int) {
		defer unix.Close(pfd)
		fds := []unix.PollFd{{Fd: int32(pfd), Events: unix.POLLIN}}
		eintr.Retry(func() error { _, err := unix.Poll(fds, -1); return err })
		r.mainGone <- pid
	}(m.pid)
}

// readMainPIDFile makes the process named by --main-pid-file the main one,
// if it is a live process of the server's tree, and reports whether it did.
// A PID of any other process is refused: it is not ours to signal. A file
// that is missing or empty is not there yet; one refused (mainpidfile.go)
// is warned about once for each reason, never with its content.
func (r *runner) readMainPIDFile() bool {
	pid, err := readMainPID(r.flags.mainPIDFile)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, errMainPIDEmpty):
		return false // still being written
	case err == nil && r.isHelper(pid):
		err = fmt.Errorf("%s: PID %d is dirlockd's fence process or etcd agent", r.flags.mainPIDFile, pid)
	case err == nil && r.main != nil && r.main.pid == pid:
		return true
	case errors.Is(err, errMainPIDNotPID) || errors.Is(err, errMainPIDTooLong):
		err = fmt.Errorf("%s: %w", r.flags.mainPIDFile, err)
	}
	m, ok := member{}, false
	if err == nil {
		if m, ok = pinMain(pid); !ok {
			err = fmt.Errorf("%s: PID %d is not a live process of the server's tree", r.flags.mainPIDFile, pid)
		}
	}
	if !ok {
		if msg := err.Error(); msg != r.badMain {
			r.badMain = msg
			r.log.Warn("--main-pid-file ignored", "err", err)
		}
		return false
	}
	r.setMain(m, r.flags.mainPIDFile)
	r.log.Info("the server's main process", "pid", pid, "from", r.flags.mainPIDFile, "command", proc.Cmdline(pid))
	return true
}

// mainPIDFilePoll is how often --main-pid-file is read until it names the
// main process.
const mainPIDFilePoll = 100 * time.Millisecond

// mainGoneElsewhere handles the exit of a main process that was not our
// child when it became the main one, so its parent, not we, reaps it.
func (r *runner) mainGoneElsewhere(pid int) {
	if r.main == nil || r.main.pid != pid {
		return
	}
	var info unix.Siginfo
	if unix.Waitid(unix.P_PIDFD, r.main.pfd, &info, unix.WEXITED|unix.WNOWAIT|unix.WNOHANG, nil) == nil && info.Signo != 0 {
		return // reparented to us meanwhile: reapAll brings its status
	}
	r.mainExited(nil)
}

// mainExited handles the end of the main process; ws is nil when its status
// is not ours to know.
func (r *runner) mainExited(ws *unix.WaitStatus) {
	m := *r.main
	r.main = nil
	unix.Close(m.pfd)
	r.keeper.SetExtra(mainPIDKey, "")
	var rest pinned
	if hasChildren() {
		rest = pinTree(r.helpers()...)
		defer rest.Close()
	}
	wasCommand := m.pid == r.cmdPID
	switch {
	case wasCommand && len(rest) == 0:
		r.logExit("the server", m.pid, *ws) // the command was the whole server
	case wasCommand:
		r.logExit("the command", m.pid, *ws)
	case ws != nil:
		r.logExit("the server's main process", m.pid, *ws)
		code := exitCode(*ws)
		r.mainCode = &code
	default:
		r.log.Warn("the server's main process exited; its exit status is its parent's to know", "pid", m.pid)
	}
	if len(rest) == 0 {
		return // the tree is gone: reapAll says so next
	}
	pids := rest.PIDs()
	switch {
	case r.stopAsked && r.flags.killMode == killProcess:
		r.log.Info("the main process exited; --kill-mode process: holding the data directory until the processes left in its tree exit", "pids", pids)
	case r.stopAsked:
		r.log.Info("the main process exited; stopping the processes left in its tree", "pids", pids)
		rest.Signal(unix.SIGTERM)
		rest.Signal(unix.SIGCONT)
	case wasCommand && r.cmdCode != 0:
		// A start command that fails has failed the server, whatever
		// it left running (systemd fails a Type=forking unit alike).
		r.beginStop(fmt.Sprintf("the command failed (status %d); stopping what it left behind", r.cmdCode))
		rest.Signal(unix.SIGTERM)
		rest.Signal(unix.SIGCONT)
	case wasCommand && r.flags.mainPIDFile != "":
		r.log.Info("the command exited; waiting for --main-pid-file to name the main process", "file", r.flags.mainPIDFile, "pids", pids)
	case wasCommand:
		var top []int
		for _, t := range rest {
			if t.parent == os.Getpid() {
				top = append(top, t.pid)
			}
		}
		if len(top) == 1 {
			if m, ok := pin(top[0], os.Getpid()); ok {
				r.setMain(m, "the only process left")
				r.log.Info("the command exited; the server's main process is now the only process left", "pid", m.pid, "command", proc.Cmdline(m.pid))
				return
			}
		}
		r.log.Info("the command exited; holding the data directory until the last process of its tree exits", "pids", pids)
	default:
		r.beginStop("the server's main process exited")
		rest.Signal(unix.SIGTERM)
		rest.Signal(unix.SIGCONT)
	}
}
