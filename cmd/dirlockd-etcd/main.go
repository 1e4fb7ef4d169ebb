// Command dirlockd-etcd is dirlockd's etcd agent: the one executable that
// links etcd's client, so that dirlockd itself never pays for it (package
// internal/lease/agent says why and how). dirlockd run, check, status,
// wait and stress start it for --etcd and talk to it over its standard
// input and output; it is not run by hand.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/dirlockd/dirlockd/internal/lease/agent"
)

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "dirlockd-etcd is internal: dirlockd starts it for --etcd (docs/lease.md) and talks to it over its standard input and output. It is not run by hand.")
		if os.Args[1] == "-h" || os.Args[1] == "--help" {
			os.Exit(0)
		}
		os.Exit(64)
	}
	// It ends when its parent closes its input, after the parent has
	// revoked the lease, not at the signals that stop a server: under
	// systemd the whole cgroup gets SIGTERM at once.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGPIPE)
	if err := agent.Serve(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "dirlockd-etcd:", err)
		os.Exit(70)
	}
}
