package main

import (
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/lease"
)

// fenceCommand is the hidden command of the lease's watchdog process
// (lease.Watchdog); it is not in the command table: users never run it.
const fenceCommand = "fence"

// cmdFence is the fence process: "dirlockd fence KILLAT", the socket on
// descriptor 3. It is not for users.
func cmdFence(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(stdout, "dirlockd fence is internal: dirlockd run --etcd starts it to kill the server's tree if dirlockd itself\nis stopped or killed before the lease can end (docs/lease.md). It is not run by hand.")
		return 0
	}
	if len(args) != 1 {
		fmt.Fprintln(stderr, "dirlockd fence is started by dirlockd run --etcd, not by hand")
		return exitcode.Usage
	}
	at, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil {
		fmt.Fprintln(stderr, "dirlockd fence: bad kill time:", err)
		return exitcode.Usage
	}
	return lease.RunWatchdog(at, 3, stderr)
}

// startWatchdog starts g's watchdog, this executable's hidden command
// fence.
func startWatchdog(g *lease.Guard) (*lease.Watchdog, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return g.StartWatchdog(self, "dirlockd", fenceCommand)
}
