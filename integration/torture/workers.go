package torture

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/stress"
	"github.com/dirlockd/dirlockd/pidfile"
)

// The worker side: modes of the re-executed test binary that scenarios run
// as servers under "dirlockd run", or directly as library contenders.

// WorkerMain is the worker side, run inside "dirlockd run" (or directly by a
// scenario) as a re-executed test binary. args[0] is the mode:
//
//	work WITNESS HOLD        do the witness work once with $DIRLOCKD_TOKEN, exit 0
//	lib DATADIR WITNESS HOLD N   N times: interlock.Acquire (waiting), work, Release
//	sleep                    sleep until killed (a server that keeps the inherited lock)
func WorkerMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "torture worker: no mode")
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "torture worker:", err)
		return 1
	}
	switch args[0] {
	case "work":
		hold, _ := time.ParseDuration(args[2])
		if err := serverWork(args[1], hold); err != nil {
			return fail(err)
		}
		return 0
	case "lib":
		hold, _ := time.ParseDuration(args[3])
		n, _ := strconv.Atoi(args[4])
		w, err := stress.NewWitness(args[2], "", witnessHost)
		if err != nil {
			return fail(err)
		}
		for range n {
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			l, err := interlock.Acquire(ctx, args[1], interlock.Options{Wait: -1})
			cancel()
			if err != nil {
				return fail(err)
			}
			if err := work(w, l.Record().Token, hold); err != nil {
				l.Release()
				return fail(err)
			}
			if err := l.Release(); err != nil {
				return fail(err)
			}
		}
		return 0
	case "sleep":
		fmt.Println("sleeping")
		for {
			time.Sleep(time.Hour)
		}
	case "hold":
		return workerHold(args[1:])
	case "closefds-sleep":
		return workerCloseFDsSleep(args[1:])
	case "spawn-attacher":
		return workerSpawnAttacher(args[1:])
	case "attach-sleep":
		return workerAttachSleep(args[1:])
	}
	return fail(fmt.Errorf("unknown mode %q", args[0]))
}

// workerHold is worker mode "hold WITNESS": enter the witness with
// $DIRLOCKD_TOKEN, print "holding", and wait; on SIGTERM finish the work (the
// counter) and exit 0, as a server shutting down cleanly does.
func workerHold(args []string) int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	h, err := serverEnter(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "torture worker:", err)
		return 1
	}
	fmt.Println("holding")
	<-term
	if err := h.Exit(); err != nil {
		fmt.Fprintln(os.Stderr, "torture worker:", err)
		return 1
	}
	return 0
}

// workerCloseFDsSleep is worker mode "closefds-sleep [WITNESS]": close the
// inherited locked descriptor (fd 3), enter the witness if given, print
// "sleeping", and sleep until killed. Only DIRLOCKD_TOKEN links it to the
// directory.
func workerCloseFDsSleep(args []string) int {
	if err := syscall.Close(3); err != nil {
		fmt.Fprintln(os.Stderr, "torture worker: close fd 3:", err)
		return 1
	}
	if len(args) > 0 {
		if _, err := serverEnter(args[0]); err != nil {
			fmt.Fprintln(os.Stderr, "torture worker:", err)
			return 1
		}
	}
	fmt.Println("sleeping")
	for {
		time.Sleep(time.Hour)
	}
}

// workerSpawnAttacher is worker mode "spawn-attacher WITNESS HOLD": do the
// witness work, then start a helper in mode "attach-sleep $DIRLOCKD_SHM_ID"
// with neither the locked descriptor nor DIRLOCKD_TOKEN, wait until it is
// attached, print "grandchild PID", and exit 0.
func workerSpawnAttacher(args []string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "torture worker:", err)
		return 1
	}
	hold, _ := time.ParseDuration(args[1])
	if err := serverWork(args[0], hold); err != nil {
		return fail(err)
	}
	// The inherited lock descriptor has no close-on-exec flag: the helper
	// must not inherit it.
	syscall.CloseOnExec(3)
	exe, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	cmd := exec.Command(exe, "attach-sleep", os.Getenv("DIRLOCKD_SHM_ID"))
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, interlock.TokenEnv+"=") })
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "attached" {
		cmd.Process.Kill()
		cmd.Wait()
		return fail(fmt.Errorf("helper: %q, %v", line, err))
	}
	fmt.Printf("grandchild %d\n", cmd.Process.Pid)
	return 0
}

// workerAttachSleep is worker mode "attach-sleep ID": attach SysV segment ID
// read-write, print "attached", and sleep until killed. It refuses to run
// with a descriptor of a pidfile open.
func workerAttachSleep(args []string) int {
	fail := func(err error) int {
		fmt.Println("error:", err)
		return 1
	}
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		if t, _ := os.Readlink("/proc/self/fd/" + fd.Name()); strings.HasSuffix(t, "/"+pidfile.DefaultName) {
			return fail(fmt.Errorf("fd %s is the pidfile %s", fd.Name(), t))
		}
	}
	id, err := strconv.Atoi(args[0])
	if err != nil {
		return fail(err)
	}
	if _, err := unix.SysvShmAttach(id, 0, 0); err != nil {
		return fail(fmt.Errorf("shmat(%d): %w", id, err))
	}
	fmt.Println("attached")
	for {
		time.Sleep(time.Hour)
	}
}

// work is what a holder does while it holds: enter the witness, work for
// hold (the counter's read-sleep-write), and exit.
func work(w *stress.Witness, token string, hold time.Duration) error {
	h, err := w.Enter(token)
	if err != nil {
		return err
	}
	time.Sleep(hold)
	return h.Exit()
}

// serverEnter enters the witness in dir as the server of a hold under
// "dirlockd run": a writer whose id is its $DIRLOCKD_TOKEN, the one thing
// of it that the harness, which may kill it, knows.
func serverEnter(dir string) (*stress.Hold, error) {
	tok := os.Getenv(interlock.TokenEnv)
	w, err := stress.NewWitness(dir, tok, witnessHost)
	if err != nil {
		return nil, err
	}
	return w.Enter(tok)
}

// serverWork is work for the server of a hold under "dirlockd run".
func serverWork(dir string, hold time.Duration) error {
	tok := os.Getenv(interlock.TokenEnv)
	w, err := stress.NewWitness(dir, tok, witnessHost)
	if err != nil {
		return err
	}
	return work(w, tok, hold)
}
