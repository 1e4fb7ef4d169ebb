package interlock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/fault"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

func TestMain(m *testing.M) {
	testutil.Main(m, map[string]testutil.Helper{
		"hold":    helperHold,
		"crash":   helperCrash,
		"attach":  helperAttach,
		"race":    helperRace,
		"cycle":   helperCycle,
		"inspect": helperInspect,
	})
}

// errClass names the outcome of Acquire for helpers' reports.
func errClass(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, interlock.ErrHeld):
		return "held"
	case errors.Is(err, interlock.ErrOrphans):
		return "orphans"
	case errors.Is(err, interlock.ErrInvalid):
		return "invalid"
	}
	return "error"
}

// helperHold acquires args[0] and then obeys commands on stdin:
// release, spawn-fd, spawn-attach, spawn-token. Children it spawns outlive it.
func helperHold(args []string) int {
	opts := interlock.Options{}
	if len(args) > 1 {
		m, err := pidfile.ParseMethod(args[1])
		if err != nil {
			fmt.Println("error", err)
			return 2
		}
		opts.LockMethod = m
	}
	l, err := interlock.Acquire(context.Background(), args[0], opts)
	if err != nil {
		fmt.Println("error", errClass(err), strings.ReplaceAll(err.Error(), "\n", " "))
		return 1
	}
	r := l.Record()
	fmt.Println("held", r.PID, r.Token, r.ShmID)
	in := testutil.Lines()
	for in.Scan() {
		var cmd *exec.Cmd
		switch in.Text() {
		case "release":
			if err := l.Release(); err != nil {
				fmt.Println("error", err)
				return 1
			}
			fmt.Println("released")
			continue
		case "spawn-fd": // a server that keeps the inherited lock
			cmd = exec.Command("/bin/sleep", "300")
			cmd.ExtraFiles = []*os.File{l.File().OS()}
		case "spawn-token": // a server that closed every inherited fd
			cmd = exec.Command("/bin/sleep", "300")
			cmd.Env = append(os.Environ(), interlock.TokenEnv+"="+r.Token)
		case "spawn-attach": // a child attached to the segment, lock fd closed
			cmd = testutil.Command("attach", strconv.Itoa(r.ShmID))
			cmd.Stdout = nil
			out, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				fmt.Println("error", err)
				return 1
			}
			buf := make([]byte, 64)
			n, _ := out.Read(buf)
			if !strings.HasPrefix(string(buf[:n]), "attached") {
				fmt.Println("error attach helper said", string(buf[:n]))
				return 1
			}
			fmt.Println("child", cmd.Process.Pid)
			continue
		default:
			fmt.Println("error unknown command", in.Text())
			return 2
		}
		if err := cmd.Start(); err != nil {
			fmt.Println("error", err)
			return 1
		}
		fmt.Println("child", cmd.Process.Pid)
	}
	return 0
}

// helperCrash acquires args[0] and SIGKILLs itself at step args[1] (a
// Release step: after acquiring, during Release).
func helperCrash(args []string) int {
	step, _ := strconv.Atoi(args[1])
	opts := interlock.WithHook(interlock.Options{}, func(s fault.Step) {
		if int(s) == step {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	})
	l, err := interlock.Acquire(context.Background(), args[0], opts)
	if err != nil {
		fmt.Println("error", errClass(err), err)
		return 1
	}
	l.Release()
	fmt.Println("survived")
	return 0
}

// helperAttach attaches SysV segment args[0] and sleeps forever.
func helperAttach(args []string) int {
	id, _ := strconv.Atoi(args[0])
	if _, err := unix.SysvShmAttach(id, 0, 0); err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("attached")
	for {
		time.Sleep(time.Hour)
	}
}

// helperRace answers "go DIR" with the outcome of one Acquire attempt, and
// "release" by releasing what it won.
func helperRace(args []string) int {
	var l *interlock.Lock
	in := testutil.Lines()
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		switch cmd {
		case "go":
			var err error
			l, err = interlock.Acquire(context.Background(), arg, interlock.Options{})
			if err != nil {
				fmt.Println("lost", errClass(err), strings.ReplaceAll(err.Error(), "\n", " "))
			} else {
				fmt.Println("won")
			}
		case "release":
			if l != nil {
				if err := l.Release(); err != nil {
					fmt.Println("error", err)
					return 1
				}
				l = nil
			}
			fmt.Println("ok")
		}
	}
	return 0
}

// helperCycle acquires and releases args[0] args[1] times with Wait 0 and
// reports how many attempts failed, and the first failure.
func helperCycle(args []string) int {
	n, _ := strconv.Atoi(args[1])
	fails, first := 0, ""
	for range n {
		l, err := interlock.Acquire(context.Background(), args[0], interlock.Options{})
		if err != nil {
			if fails++; first == "" {
				first = err.Error()
			}
			continue
		}
		if err := l.Release(); err != nil {
			fmt.Println("error", err)
			return 1
		}
	}
	fmt.Printf("done %d %s\n", fails, first)
	return 0
}

// helperInspect inspects args[0] and prints "STATE PID", PID being the
// recorded holder's (0 without a record).
func helperInspect(args []string) int {
	rep, err := interlock.Inspect(args[0], interlock.Options{})
	if err != nil {
		fmt.Println("error", errClass(err), err)
		return 1
	}
	pid := 0
	if rep.Record != nil {
		pid = rep.Record.PID
	}
	fmt.Println(rep.State, pid)
	return 0
}
