package testutil

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// NetLab is a network made for one test, for partitions that a loopback
// proxy cannot make: a bridge in a network namespace of its own (the
// switch), and nodes, each a network namespace with one veth link to the
// bridge and one address in a private /24 that exists only inside these
// namespaces (nothing is added to the host's own namespace, so nothing is
// routed from or to it). A node is cut from everyone by setting its link
// down (Down), or from some nodes only by nftables rules in its namespace
// that drop their packets both ways (Isolate), silently, as a real
// partition does. Everything is removed when the test ends, failed or not.
type NetLab struct {
	t      testing.TB
	name   string // the prefix of every name: namespaces, links
	subnet string // "10.X.Y", the /24's first three octets
	sw     string // the switch's namespace
	nodes  []*NetNode
}

// NetNode is a namespace of a NetLab with one address.
type NetNode struct {
	Name string // as the test named it
	NS   string // the network namespace: /run/netns/NS
	IP   string
	lab  *NetLab
	port string // the veth end on the bridge, in the switch's namespace
	cut  []*NetNode
}

// NewNetLab makes the switch: a namespace holding a bridge. prefix, at most
// 5 characters, begins every name the lab makes (namespaces, links), with 3
// random characters after it, so that labs of concurrent tests never meet.
func NewNetLab(t testing.TB, prefix string) *NetLab {
	t.Helper()
	if len(prefix) > 5 {
		t.Fatalf("net lab prefix %q: at most 5 characters (link names are at most 15)", prefix)
	}
	l := &NetLab{t: t, name: fmt.Sprintf("%s%03x", prefix, rand.IntN(0x1000)),
		// 10.200.0.0-10.255.255.0: a /24 nobody routes to, inside our
		// namespaces only.
		subnet: fmt.Sprintf("10.%d.%d", 200+rand.IntN(56), rand.IntN(256))}
	l.sw = l.name + "sw"
	t.Cleanup(l.remove)
	l.ip("netns", "add", l.sw)
	l.ip("-n", l.sw, "link", "add", "br0", "type", "bridge")
	l.ip("-n", l.sw, "link", "set", "br0", "up")
	return l
}

// ip runs ip(8), failing the test on an error.
func (l *NetLab) ip(args ...string) {
	l.t.Helper()
	mustRun(l.t, "ip", args...)
}

// remove deletes the namespaces, and with them the links, the bridge and
// the rules. The processes a test started in them are its to end (by PID,
// before this runs: t.Cleanup runs in reverse order).
func (l *NetLab) remove() {
	for _, n := range l.nodes {
		exec.Command("ip", "netns", "del", n.NS).Run()
	}
	exec.Command("ip", "netns", "del", l.sw).Run()
}

// AddNode makes a node: a namespace with loopback up and eth0, a veth link
// to the bridge, with the next address of the lab's /24.
func (l *NetLab) AddNode(name string) *NetNode {
	l.t.Helper()
	i := len(l.nodes)
	n := &NetNode{Name: name, NS: fmt.Sprintf("%sn%d", l.name, i), IP: fmt.Sprintf("%s.%d", l.subnet, i+10),
		lab: l, port: fmt.Sprintf("%sp%d", l.name, i)}
	l.nodes = append(l.nodes, n)
	l.ip("netns", "add", n.NS)
	l.ip("-n", n.NS, "link", "set", "lo", "up")
	// Both ends made in their namespaces at once: the host's namespace
	// never sees them.
	l.ip("-n", l.sw, "link", "add", n.port, "type", "veth", "peer", "name", "eth0", "netns", n.NS)
	l.ip("-n", l.sw, "link", "set", n.port, "master", "br0")
	l.ip("-n", l.sw, "link", "set", n.port, "up")
	l.ip("-n", n.NS, "addr", "add", n.IP+"/24", "dev", "eth0")
	l.ip("-n", n.NS, "link", "set", "eth0", "up")
	return n
}

// Command is name args run inside the node's namespace (ip netns exec,
// which execs it: the process's PID is the command's).
func (n *NetNode) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.NS, name}, args...)...)
}

// Prefix is the command line that runs a command in the node's namespace.
func (n *NetNode) Prefix() []string { return []string{"ip", "netns", "exec", n.NS} }

// Down cuts the node from every other node: its link to the bridge goes
// down. Up heals it.
func (n *NetNode) Down() { n.lab.ip("-n", n.lab.sw, "link", "set", n.port, "down") }

// Up heals a Down.
func (n *NetNode) Up() { n.lab.ip("-n", n.lab.sw, "link", "set", n.port, "up") }

// Isolate cuts the node from peers only: nftables rules in its namespace
// drop every packet to or from their addresses, silently. Rejoin heals it.
func (n *NetNode) Isolate(peers ...*NetNode) {
	n.lab.t.Helper()
	var ips []string
	for _, p := range peers {
		ips = append(ips, p.IP)
	}
	set := strings.Join(ips, ", ")
	rules := fmt.Sprintf(`table inet dl_cut {
	chain in { type filter hook input priority 0; ip saddr { %s } drop; }
	chain out { type filter hook output priority 0; ip daddr { %s } drop; }
}
`, set, set)
	cmd := n.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		n.lab.t.Fatalf("nft in %s: %v: %s", n.NS, err, out)
	}
	n.cut = peers
}

// Rejoin removes Isolate's rules.
func (n *NetNode) Rejoin() {
	n.lab.t.Helper()
	if out, err := n.Command("nft", "delete", "table", "inet", "dl_cut").CombinedOutput(); err != nil {
		n.lab.t.Fatalf("nft in %s: %v: %s", n.NS, err, out)
	}
	n.cut = nil
}

// Dial connects from inside the node's namespace: a socket belongs to the
// namespace of the thread that made it, so a locked thread moves into the
// namespace, makes the connection, and moves back before it is unlocked.
// Leaving it locked for Go to end with its goroutine is not enough: Go
// cannot end the process's main thread and wedges it instead, and the main
// thread's namespace is the one /proc/self/net shows the whole test.
func (n *NetNode) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- result{nil, err}
			return // the thread ends locked, where it was
		}
		defer home.Close()
		f, err := os.Open("/run/netns/" + n.NS)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("setns %s: %w", n.NS, err)}
			return
		}
		c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
		ch <- result{c, err}
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else the thread stays locked and ends with the goroutine
	}()
	r := <-ch
	return r.c, r.err
}

// HTTPClient is an HTTP client whose connections start in the node's
// namespace.
func (n *NetNode) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: n.Dial, DisableKeepAlives: true}}
}
