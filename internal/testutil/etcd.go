package testutil

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// EtcdMember is one etcd server process a test started, on loopback ports,
// with its own data directory. The test ends it by its PID.
type EtcdMember struct {
	Name       string
	ClientURL  string // http://127.0.0.1:PORT
	PeerURL    string
	DataDir    string
	LogPath    string
	cmd        *exec.Cmd
	binary     string
	prefix     []string     // the command line it runs under (a NetLab node's namespace)
	http       *http.Client // for its /health and /v3 gateway
	args       []string
	t          testing.TB
	stopped    bool
	terminated bool
}

// EtcdCluster is a set of etcd members forming one cluster.
type EtcdCluster struct {
	Members []*EtcdMember
}

// Endpoints returns the members' client URLs, comma-separated.
func (c *EtcdCluster) Endpoints() string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.ClientURL)
	}
	return strings.Join(eps, ",")
}

// EtcdBinary is the etcd server the tests run (Debian's etcd-server).
const EtcdBinary = "/usr/bin/etcd"

// StartEtcd starts an etcd cluster of n members and waits until every member
// says it is healthy. The members are killed and their data removed when
// the test ends.
func StartEtcd(t testing.TB, n int) *EtcdCluster {
	t.Helper()
	base := t.TempDir()
	c := &EtcdCluster{}
	for range n {
		c.Members = append(c.Members, &EtcdMember{
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
			binary:    EtcdBinary,
		})
	}
	c.start(t, base)
	return c
}

// StartEtcdLab starts an etcd cluster of version (EtcdBinaryFor) with one
// member in each of nodes' namespaces, on their addresses; ctl is the
// node, never cut, from which the test reaches the members' /health and
// /v3 gateways. --pre-vote is on, as etcd 3.5 and later have it by
// default: without it, an etcd 3.4 member that rejoins after a partition
// forces an election (11 s without a leader seen). dataDirs[i], where given
// and not "", is member i's data directory (on a Disk the test pauses);
// the others' are in a temporary directory.
func StartEtcdLab(t testing.TB, version string, ctl *NetNode, nodes []*NetNode, dataDirs ...string) *EtcdCluster {
	t.Helper()
	bin := EtcdBinaryFor(t, version)
	c := &EtcdCluster{}
	for i, nd := range nodes {
		dataDir := ""
		if i < len(dataDirs) {
			dataDir = dataDirs[i]
		}
		c.Members = append(c.Members, &EtcdMember{
			DataDir:   dataDir,
			ClientURL: "http://" + nd.IP + ":2379",
			PeerURL:   "http://" + nd.IP + ":2380",
			binary:    bin,
			prefix:    nd.Prefix(),
			http:      ctl.HTTPClient(2 * time.Second),
		})
	}
	c.start(t, t.TempDir(), "--pre-vote=true")
	return c
}

// start starts c's members, with data and logs under base, and waits until
// each says it is healthy. They are killed and their data removed when
// the test ends.
func (c *EtcdCluster) start(t testing.TB, base string, extra ...string) {
	t.Helper()
	var initial []string
	for i, m := range c.Members {
		m.Name = fmt.Sprintf("m%d", i)
		if m.DataDir == "" {
			m.DataDir = filepath.Join(base, m.Name)
		}
		m.LogPath = filepath.Join(base, m.Name+".log")
		m.t = t
		if m.http == nil {
			m.http = &http.Client{Timeout: 2 * time.Second}
		}
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	for _, m := range c.Members {
		m.args = append([]string{"--name", m.Name, "--data-dir", m.DataDir,
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", filepath.Base(base),
			"--logger", "zap", "--log-outputs", m.LogPath,
			// Twice etcd's defaults: the test machine is small and shared,
			// and a member that misses heartbeats under load starts
			// elections nobody asked for. The least TTL etcd grants is
			// then 3 s (1.5 election timeouts).
			"--heartbeat-interval", "200", "--election-timeout", "2000"}, extra...)
		m.start()
	}
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.Kill()
		}
		if t.Failed() {
			for _, m := range c.Members {
				b, _ := os.ReadFile(m.LogPath)
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				t.Logf("etcd %s log (last lines):\n%s", m.Name, strings.Join(lines[max(0, len(lines)-15):], "\n"))
			}
		}
	})
	for _, m := range c.Members {
		m.WaitHealthy(60 * time.Second)
	}
}

func (m *EtcdMember) start() {
	m.t.Helper()
	argv := append(append(append([]string{}, m.prefix...), m.binary), m.args...)
	m.cmd = exec.Command(argv[0], argv[1:]...)
	m.cmd.Env = []string{"PATH=/usr/bin:/bin", "ETCD_UNSUPPORTED_ARCH=" + os.Getenv("ETCD_UNSUPPORTED_ARCH")}
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start etcd: %v", err)
	}
	m.stopped, m.terminated = false, false
}

// PID returns the member's process ID.
func (m *EtcdMember) PID() int { return m.cmd.Process.Pid }

// WaitHealthy polls the member's /health until it says true.
func (m *EtcdMember) WaitHealthy(timeout time.Duration) {
	m.t.Helper()
	end := time.Now().Add(timeout)
	for {
		resp, err := m.http.Get(m.ClientURL + "/health")
		if err == nil {
			var b [256]byte
			n, _ := resp.Body.Read(b[:])
			resp.Body.Close()
			if strings.Contains(string(b[:n]), `"health":"true"`) {
				return
			}
		}
		if time.Now().After(end) {
			m.t.Fatalf("etcd %s (pid %d) not healthy within %v: %v", m.Name, m.PID(), timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop sends SIGSTOP; Cont SIGCONT.
func (m *EtcdMember) Stop() {
	m.cmd.Process.Signal(syscall.SIGSTOP)
	m.stopped = true
}

// Cont resumes a member stopped by Stop.
func (m *EtcdMember) Cont() {
	m.cmd.Process.Signal(syscall.SIGCONT)
	m.stopped = false
}

// Kill SIGKILLs the member and reaps it. Its data stays, for Restart.
func (m *EtcdMember) Kill() {
	if m.terminated {
		return
	}
	m.cmd.Process.Signal(syscall.SIGKILL)
	m.cmd.Wait()
	m.terminated = true
}

// Restart starts a killed member again on its data directory.
func (m *EtcdMember) Restart() {
	m.t.Helper()
	m.Kill()
	m.start()
}

// IsLeader asks the member, through its /v3 gateway, whether it is the
// leader (the maintenance API's Status: leader == its own member id).
func (m *EtcdMember) IsLeader() bool {
	id, leader, err := m.Status()
	return err == nil && leader != "" && leader == id
}

// Status returns the member's ID and its leader's (the maintenance API's
// Status, through the /v3 gateway), as decimal strings; leader is "" or
// "0" without one.
func (m *EtcdMember) Status() (id, leader string, err error) {
	resp, err := m.http.Post(m.ClientURL+"/v3/maintenance/status", "application/json", strings.NewReader("{}"))
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	var s struct {
		Header struct {
			MemberID string `json:"member_id"`
		} `json:"header"`
		Leader string `json:"leader"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return "", "", fmt.Errorf("etcd %s status: %w", m.Name, err)
	}
	return s.Header.MemberID, s.Leader, nil
}

// Put writes key = value through the member's /v3 gateway.
func (m *EtcdMember) Put(key, value string) error {
	b64 := base64.StdEncoding.EncodeToString
	resp, err := m.http.Post(m.ClientURL+"/v3/kv/put", "application/json",
		strings.NewReader(`{"key":"`+b64([]byte(key))+`","value":"`+b64([]byte(value))+`"}`))
	if err != nil {
		return fmt.Errorf("etcd %s put %s: %w", m.Name, key, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("etcd %s put %s: %s: %s", m.Name, key, resp.Status, msg)
	}
	return nil
}

// Has reports whether key exists, by a linearizable read through the
// member's /v3 gateway.
func (m *EtcdMember) Has(key string) (bool, error) {
	resp, err := m.http.Post(m.ClientURL+"/v3/kv/range", "application/json",
		strings.NewReader(`{"key":"`+base64.StdEncoding.EncodeToString([]byte(key))+`","count_only":true}`))
	if err != nil {
		return false, fmt.Errorf("etcd %s range %s: %w", m.Name, key, err)
	}
	defer resp.Body.Close()
	var r struct {
		Count string `json:"count"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return false, fmt.Errorf("etcd %s range %s: %w", m.Name, key, err)
	}
	return r.Count != "" && r.Count != "0", nil
}

// MoveLeader asks the leader ld to hand its leadership to m (etcdctl
// move-leader), and waits until m leads.
func (c *EtcdCluster) MoveLeader(t testing.TB, ld, m *EtcdMember) {
	t.Helper()
	id, _, err := m.Status()
	if err != nil {
		t.Fatal(err)
	}
	if ld == m {
		return
	}
	resp, err := ld.http.Post(ld.ClientURL+"/v3/maintenance/transfer-leadership", "application/json",
		strings.NewReader(`{"targetID":"`+id+`"}`))
	if err != nil {
		t.Fatalf("etcd move-leader to %s: %v", m.Name, err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("etcd move-leader to %s: %s: %s", m.Name, resp.Status, msg)
	}
	for end := time.Now().Add(20 * time.Second); !m.IsLeader(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("etcd %s did not become the leader within 20s", m.Name)
		}
	}
}

// Leader returns the member that leads, waiting for one up to timeout;
// among members (all of c's if none) only.
func (c *EtcdCluster) Leader(t testing.TB, timeout time.Duration, among ...*EtcdMember) *EtcdMember {
	t.Helper()
	if len(among) == 0 {
		among = c.Members
	}
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		for _, m := range among {
			if m.IsLeader() {
				return m
			}
		}
	}
	t.Fatalf("no leader among %d members within %v", len(among), timeout)
	return nil
}

// EtcdGrant is a user EnableAuth creates: with password, a role of its own
// name, granted read and write on the keys from Key up to RangeEnd (only Key
// if RangeEnd is empty).
type EtcdGrant struct {
	User, Password, Key, RangeEnd string
}

// EnableAuth turns authentication on (through the first member's /v3
// gateway, so that this package needs no etcd client): it adds root with
// rootPassword and the users of grants, then enables auth.
func (c *EtcdCluster) EnableAuth(t testing.TB, rootPassword string, grants ...EtcdGrant) {
	t.Helper()
	url := c.Members[0].ClientURL + "/v3/auth/"
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	post := func(path string, body any) {
		t.Helper()
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Post(url+path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatalf("etcd %s: %v", path, err)
		}
		defer resp.Body.Close()
		if msg, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK {
			t.Fatalf("etcd %s %s: %s: %s", path, b, resp.Status, msg)
		}
	}
	post("user/add", map[string]string{"name": "root", "password": rootPassword})
	post("user/grant", map[string]string{"user": "root", "role": "root"})
	for _, g := range grants {
		post("user/add", map[string]string{"name": g.User, "password": g.Password})
		post("role/add", map[string]string{"name": g.User})
		perm := map[string]string{"permType": "READWRITE", "key": b64(g.Key)}
		if g.RangeEnd != "" {
			perm["range_end"] = b64(g.RangeEnd)
		}
		post("role/grant", map[string]any{"name": g.User, "perm": perm})
		post("user/grant", map[string]string{"user": g.User, "role": g.User})
	}
	post("enable", struct{}{})
}
