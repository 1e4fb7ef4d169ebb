package supervise

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/proc"
)

// setMain makes m the main process. A main process that is not our child is
// watched through its pidfd, since its exit reaches its parent, not us.
func (s *Supervisor) setMain(m proc.Pinned, from string) {
	if s.main != nil {
		s.main.Close()
	}
	s.main, s.mainFrom = &m, from
	s.Record.SetExtra(MainPIDKey, strconv.Itoa(m.PID))
	if m.Parent == os.Getpid() {
		return
	}
	d, err := m.Dup()
	if err != nil {
		return
	}
	if s.mainGone == nil {
		s.mainGone = make(chan int, 1)
	}
	go func() {
		defer d.Close()
		d.WaitExit(-1)
		s.mainGone <- d.PID
	}()
}

// readMainPIDFile makes the process named by --main-pid-file the main one,
// if it is a live process of the server's tree, and reports whether it did.
// A PID of any other process is refused: it is not ours to signal. A file
// that is missing or empty is not there yet; one refused (mainpidfile.go)
// is warned about once for each reason, never with its content.
func (s *Supervisor) readMainPIDFile() bool {
	pid, err := readMainPID(s.MainPIDFile)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, errMainPIDEmpty):
		return false // still being written
	case err == nil && s.isHelper(pid):
		err = fmt.Errorf("%s: PID %d is dirlockd's fence process or etcd agent", s.MainPIDFile, pid)
	case err == nil && s.main != nil && s.main.PID == pid:
		return true
	case errors.Is(err, errMainPIDNotPID) || errors.Is(err, errMainPIDTooLong):
		err = fmt.Errorf("%s: %w", s.MainPIDFile, err)
	}
	m, ok := proc.Pinned{}, false
	if err == nil {
		if m, ok = proc.PinDescendant(pid, os.Getpid()); !ok {
			err = fmt.Errorf("%s: PID %d is not a live process of the server's tree", s.MainPIDFile, pid)
		}
	}
	if !ok {
		if msg := err.Error(); msg != s.badMain {
			s.badMain = msg
			s.Log.Warn("--main-pid-file ignored", "err", err)
		}
		return false
	}
	s.setMain(m, s.MainPIDFile)
	s.Log.Info("the server's main process", "pid", pid, "from", s.MainPIDFile, "command", proc.Cmdline(pid))
	return true
}

// mainPIDFilePoll is how often --main-pid-file is read until it names the
// main process.
const mainPIDFilePoll = 100 * time.Millisecond

// mainGoneElsewhere handles the exit of a main process that was not our
// child when it became the main one, so its parent, not we, reaps it.
func (s *Supervisor) mainGoneElsewhere(pid int) {
	if s.main == nil || s.main.PID != pid {
		return
	}
	if s.main.Exited() {
		return // reparented to us meanwhile: reapAll brings its status
	}
	s.mainExited(nil)
}

// mainExited handles the end of the main process; ws is nil when its status
// is not ours to know.
func (s *Supervisor) mainExited(ws *unix.WaitStatus) {
	m := *s.main
	s.main = nil
	m.Close()
	s.Record.SetExtra(MainPIDKey, "")
	var rest proc.Tree
	if proc.HasChildren() {
		rest = s.pinTree()
		defer rest.Close()
	}
	wasCommand := m.PID == s.cmdPID
	switch {
	case wasCommand && len(rest) == 0:
		s.logExit("the server", m.PID, *ws) // the command was the whole server
	case wasCommand:
		s.logExit("the command", m.PID, *ws)
	case ws != nil:
		s.logExit("the server's main process", m.PID, *ws)
		code := ExitCode(*ws)
		s.mainCode = &code
	default:
		s.Log.Warn("the server's main process exited; its exit status is its parent's to know", "pid", m.PID)
	}
	if len(rest) == 0 {
		return // the tree is gone: reapAll says so next
	}
	pids := rest.PIDs()
	switch {
	case s.stopAsked && s.KillMode == Process:
		s.Log.Info("the main process exited; --kill-mode process: holding the data directory until the processes left in its tree exit", "pids", pids)
	case s.stopAsked:
		s.Log.Info("the main process exited; stopping the processes left in its tree", "pids", pids)
		rest.Signal(unix.SIGTERM)
		rest.Signal(unix.SIGCONT)
	case wasCommand && s.cmdCode != 0:
		// A start command that fails has failed the server, whatever
		// it left running (systemd fails a Type=forking unit alike).
		s.beginStop(fmt.Sprintf("the command failed (status %d); stopping what it left behind", s.cmdCode))
		rest.Signal(unix.SIGTERM)
		rest.Signal(unix.SIGCONT)
	case wasCommand && s.MainPIDFile != "":
		s.Log.Info("the command exited; waiting for --main-pid-file to name the main process", "file", s.MainPIDFile, "pids", pids)
	case wasCommand:
		var top []int
		for _, t := range rest {
			if t.Parent == os.Getpid() {
				top = append(top, t.PID)
			}
		}
		if len(top) == 1 {
			if m, ok := proc.Pin(top[0], os.Getpid()); ok {
				s.setMain(m, "the only process left")
				s.Log.Info("the command exited; the server's main process is now the only process left", "pid", m.PID, "command", proc.Cmdline(m.PID))
				return
			}
		}
		s.Log.Info("the command exited; holding the data directory until the last process of its tree exits", "pids", pids)
	default:
		s.beginStop("the server's main process exited")
		rest.Signal(unix.SIGTERM)
		rest.Signal(unix.SIGCONT)
	}
}
