package integration

// dirlockd run around real servers: Redis, etcd, and systemd as its parent.

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/notify"
	"github.com/dirlockd/dirlockd/internal/testutil"
)

// redisDo sends one inline command to redis and returns the reply line.
func redisDo(t *testing.T, port int, cmd string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "%s\r\n", cmd)
	rd := bufio.NewReader(c)
	line, err := rd.ReadString('\n')
	if err != nil {
		t.Fatalf("redis %q: %v", cmd, err)
	}
	if strings.HasPrefix(line, "$") && line != "$-1\r\n" {
		line, _ = rd.ReadString('\n')
	}
	return strings.TrimSpace(line)
}

// TestRedis wraps a real redis-server that reports readiness itself
// (--supervised systemd sends READY=1 on NOTIFY_SOCKET).
func TestRedis(t *testing.T) {
	dir := testutil.DataDir(t)
	port := testutil.FreePort(t)
	argv := []string{"redis-server", "--supervised", "systemd", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--dir", dir, "--save", "3600 1", "--appendonly", "no", "--daemonize", "no", "--logfile", ""}
	w := startRun(t, nil, dir, []string{"--ready-notify"}, argv...)
	waitHeld(t, dir, "ready", 20*time.Second)
	if !strings.Contains(w.Stderr(), "via=notify") {
		t.Errorf("readiness did not come from redis's READY=1:\n%s", w.Stderr())
	}
	if code, _, stderr := dirlockd(t, "run", "-D", dir, "--", argv[0]); code != exitcode.Held || !strings.Contains(stderr, fmt.Sprintf("held by PID %d", w.PID())) {
		t.Errorf("second run: exit %d, %q", code, stderr)
	}
	if got := redisDo(t, port, "SET dirlockd-key kept-across-restart"); got != "+OK" {
		t.Fatalf("SET: %q", got)
	}
	if code, _, stderr := dirlockd(t, "stop", "-D", dir, "--timeout", "20s"); code != 0 {
		t.Fatalf("stop: exit %d, %s", code, stderr)
	}
	if code := w.WaitExit(t, 20*time.Second); code != 0 {
		t.Errorf("redis under dirlockd exited %d after stop; stderr:\n%s", code, w.Stderr())
	}
	if code, c := check(t, dir); code != 0 || c.State != "free" {
		t.Errorf("check after stop: %d %+v", code, c)
	}

	w = startRun(t, nil, dir, []string{"--ready-notify"}, argv...)
	waitHeld(t, dir, "ready", 20*time.Second)
	if got := redisDo(t, port, "GET dirlockd-key"); got != "kept-across-restart" {
		t.Errorf("GET after restart: %q", got)
	}
	if code, _, _ := dirlockd(t, "stop", "-D", dir, "--timeout", "20s"); code != 0 {
		t.Errorf("second stop: exit %d", code)
	}
	w.WaitExit(t, 20*time.Second)
}

// TestEtcd wraps a real etcd, which notifies systemd when it serves.
func TestEtcd(t *testing.T) {
	dir := testutil.DataDir(t)
	client, peer := testutil.FreePort(t), testutil.FreePort(t)
	curl := fmt.Sprintf("http://127.0.0.1:%d", client)
	purl := fmt.Sprintf("http://127.0.0.1:%d", peer)
	argv := []string{"etcd", "--name", "default", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", curl, "--advertise-client-urls", curl,
		"--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
		"--initial-cluster", "default=" + purl}
	w := startRun(t, nil, dir, []string{"--ready-notify"}, argv...)
	waitHeld(t, dir, "ready", 30*time.Second)
	if !strings.Contains(w.Stderr(), "via=notify") {
		t.Errorf("readiness did not come from etcd's READY=1")
	}
	if code, _, stderr := dirlockd(t, "run", "-D", dir, "--", "etcd"); code != exitcode.Held || !strings.Contains(stderr, fmt.Sprintf("held by PID %d", w.PID())) {
		t.Errorf("second run: exit %d, %q", code, stderr)
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	put, _ := json.Marshal(map[string]string{"key": b64("dirlockd"), "value": b64("survives")})
	resp, err := http.Post(curl+"/v3/kv/put", "application/json", bytes.NewReader(put))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("put: %v %v", resp, err)
	}
	resp.Body.Close()
	if code, _, stderr := dirlockd(t, "stop", "-D", dir, "--timeout", "30s"); code != 0 {
		t.Fatalf("stop: exit %d, %s", code, stderr)
	}
	w.WaitExit(t, 30*time.Second)

	w = startRun(t, nil, dir, []string{"--ready-notify"}, argv...)
	waitHeld(t, dir, "ready", 30*time.Second)
	rng, _ := json.Marshal(map[string]string{"key": b64("dirlockd")})
	resp, err = http.Post(curl+"/v3/kv/range", "application/json", bytes.NewReader(rng))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Kvs []struct{ Value string } `json:"kvs"`
	}
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if len(got.Kvs) != 1 || got.Kvs[0].Value != b64("survives") {
		t.Errorf("range after restart: %+v", got)
	}
	if code, _, _ := dirlockd(t, "stop", "-D", dir, "--timeout", "30s"); code != 0 {
		t.Errorf("second stop: exit %d", code)
	}
	w.WaitExit(t, 30*time.Second)
}

// TestSystemdForwarding plays systemd: dirlockd runs with NOTIFY_SOCKET set
// to a socket of ours, wrapping a redis that notifies. Everything redis says
// must reach "systemd" with MAINPID naming dirlockd, and a stop must be
// announced.
func TestSystemdForwarding(t *testing.T) {
	dir := testutil.DataDir(t)
	sd, err := notify.Listen(filepath.Join(t.TempDir(), "notify.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer sd.Close()
	t.Setenv("NOTIFY_SOCKET", sd.Path())
	port := testutil.FreePort(t)
	w := startRun(t, nil, dir, []string{"--ready-notify"}, "redis-server", "--supervised", "systemd",
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--logfile", "")
	next := func(what string) notify.Message {
		t.Helper()
		select {
		case m := <-sd.Messages():
			return m
		case <-time.After(20 * time.Second):
			t.Fatalf("systemd got no %s", what)
		}
		return notify.Message{}
	}
	var ready notify.Message
	for !ready.Ready() {
		ready = next("READY=1")
	}
	if pid, _ := ready.Get("MAINPID"); pid != strconv.Itoa(w.PID()) || ready.PID != w.PID() {
		t.Errorf("READY=1 came from PID %d with MAINPID=%s; want both dirlockd's %d", ready.PID, pid, w.PID())
	}
	waitHeld(t, dir, "ready", 10*time.Second)
	w.Cmd.Process.Signal(syscall.SIGTERM)
	var stopping notify.Message
	for !stopping.Stopping() {
		stopping = next("STOPPING=1")
	}
	if code := w.WaitExit(t, 20*time.Second); code != 0 {
		t.Errorf("redis exited %d after SIGTERM", code)
	}
}
