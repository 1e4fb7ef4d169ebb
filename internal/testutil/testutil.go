// Package testutil holds what the test suites share: re-executing the test
// binary as a helper process, the one wrapper of the processes a test
// starts (Proc, proc.go), data directories, loopback ports, the mirror of
// check --json (Report, report.go), real etcd clusters and a TCP proxy for
// the lease tests, and the check that no SysV segment leaks.
package testutil

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// HelperEnv names the helper a re-executed test binary runs. It must not look
// like one of dirlockd's own variables, which dirlockd run replaces: a helper
// that lost it would run the whole test suite again, recursively.
const HelperEnv = "DLTEST_HELPER"

// Helper is a function a re-executed test binary runs instead of the tests;
// its return value is the process's exit code.
type Helper func(args []string) int

// Main runs a package's tests, or one of its helpers when the binary was
// re-executed by StartHelper. Around the tests it checks that the set of SysV
// segments on the machine is the same after as before (run packages with
// go test -p 1 so that they do not see each other's).
func Main(m *testing.M, helpers map[string]Helper) {
	Dispatch(helpers)
	os.Exit(Run(m))
}

// Run runs the tests with the segment check of Main and returns the exit
// code, for a TestMain that has its own clean-up to do before it exits.
// Call Dispatch first.
func Run(m *testing.M) int {
	before, err := Segments()
	if err != nil {
		fmt.Fprintln(os.Stderr, "list SysV segments:", err)
		return 1
	}
	code := m.Run()
	after, err := Segments()
	if err != nil {
		fmt.Fprintln(os.Stderr, "list SysV segments:", err)
		return 1
	}
	if leaked := slices.DeleteFunc(after, func(id int) bool { return slices.Contains(before, id) }); len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: tests leaked SysV segments (ipcs -m): ids %v\n", leaked)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Dispatch runs the helper a re-executed test binary was started for, and
// exits; it returns at once in the test process itself. A TestMain that does
// set-up work (building binaries) must call it first, or every helper would
// repeat that work.
func Dispatch(helpers map[string]Helper) {
	name := os.Getenv(HelperEnv)
	if name == "" {
		return
	}
	h, ok := helpers[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
		os.Exit(2)
	}
	os.Exit(h(os.Args[1:]))
}

// Segments lists the ids of the SysV shared-memory segments in our IPC
// namespace.
func Segments() ([]int, error) {
	b, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		return nil, err
	}
	var ids []int
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 2 {
			continue
		}
		id, err := strconv.Atoi(f[1])
		if err != nil {
			return nil, fmt.Errorf("/proc/sysvipc/shm line %d: %v", i+1, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// FreePort returns a loopback TCP port that was free a moment ago, for a
// server the test is about to start. It is never one the kernel picks by
// itself: two members of one etcd cluster once got the same port from a
// listen on port 0, and the second could not start (the other's /health
// answered for it). A port picked that way can also be taken meanwhile by
// an outgoing connection, from the same ephemeral range. So the port comes
// from below that range (net.ipv4.ip_local_port_range), where only an
// explicit bind takes a port, and is handed out once per test binary.
func FreePort(t testing.TB) int {
	t.Helper()
	const base = 10000
	top := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if lo, err := strconv.Atoi(f[0]); err == nil && lo > base+1000 {
				top = lo
			}
		}
	}
	for range 1000 {
		p := base + rand.IntN(top-base)
		if _, taken := handedOut.LoadOrStore(p, true); taken {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		l.Close()
		return p
	}
	t.Fatalf("no free loopback port in %d-%d", base, top-1)
	return 0
}

// handedOut holds the ports FreePort returned. It is shared by all of a
// test binary's tests, as the ports themselves are shared by the host.
var handedOut sync.Map

// Eventually polls cond every 10ms until it holds, and fails the test if it
// does not within timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// DataDir makes an empty data directory, mode 0700, removed after the test.
func DataDir(t testing.TB) string {
	t.Helper()
	d := t.TempDir() + "/data"
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

// Lines reads commands from stdin, one per line, for a helper.
func Lines() *bufio.Scanner { return bufio.NewScanner(os.Stdin) }
