package integration

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/notify"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

// TestWrapperKilledServerKeepsDirectory: SIGKILL the wrapper while the server
// lives. The server keeps the lock through the inherited descriptor; check
// names it as an orphan and run refuses with 76. Once the server is gone,
// check says the previous holder did not shut down cleanly, and run starts.
func TestWrapperKilledServerKeepsDirectory(t *testing.T) {
	dir := testutil.DataDir(t)
	w := startRun(t, nil, dir, nil, "sleep", "300")
	server := waitHeld(t, dir, "ready", 10*time.Second).ChildPID
	t.Cleanup(func() { syscall.Kill(server, syscall.SIGKILL) })
	w.Cmd.Process.Signal(syscall.SIGKILL)
	w.WaitExit(t, 10*time.Second)

	code, r := check(t, dir)
	if code != 2 || r.State != "orphans" || !slices.Equal(r.Orphans, []int{server}) {
		t.Fatalf("check after the wrapper was killed: exit %d, %+v; want 2, orphans [%d]", code, r, server)
	}
	code, _, stderr := dirlockd(t, "run", "-D", dir, "--", "true")
	if code != exitcode.Orphans || !strings.Contains(stderr, strconv.Itoa(server)) || !strings.Contains(stderr, "sleep 300") {
		t.Errorf("run against orphans: exit %d, stderr %q; want 76 naming %d and its command line", code, stderr, server)
	}

	killWait(t, server)
	code, r = check(t, dir)
	if code != 0 || r.State != "stale" || !strings.Contains(r.Reason, fmt.Sprintf("previous holder PID %d (started", w.PID())) ||
		!strings.Contains(r.Reason, "did not shut down cleanly") {
		t.Errorf("check after the server died: exit %d, %+v", code, r)
	}
	code, _, stderr = dirlockd(t, "run", "-D", dir, "--", "true")
	if code != 0 || !strings.Contains(stderr, "did not shut down cleanly") {
		t.Errorf("run after the orphan died: exit %d, stderr %q", code, stderr)
	}
}

func TestExitStatus(t *testing.T) {
	dir := testutil.DataDir(t)
	notExec := filepath.Join(t.TempDir(), "script")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	for _, c := range []struct {
		name string
		args []string
		want int
		text string
	}{
		{"exit 0", []string{"-D", dir, "--", "true"}, 0, "released the data directory"},
		{"exit 3", []string{"-D", dir, "--", "sh", "-c", "exit 3"}, 3, "status=3"},
		{"killed by SIGTERM", []string{"-D", dir, "--", "sh", "-c", "kill -TERM $$"}, 143, "SIGTERM"},
		{"not found", []string{"-D", dir, "--", "/nonexistent/server"}, 127, "cannot execute"},
		{"not executable", []string{"-D", dir, "--", notExec}, 126, "permission denied"},
		{"no command", []string{"-D", dir}, 64, "no command"},
		{"bad on-lost", []string{"-D", dir, "--on-lost", "panic", "--", "true"}, 64, "--on-lost"},
		{"bad duration", []string{"-D", dir, "--wait", "soon", "--", "true"}, 64, "invalid argument"},
		{"invalid dir", []string{"-D", dir + "/missing", "--", "true"}, 78, "install -d -m 0700"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, stderr := dirlockd(t, append([]string{"run"}, c.args...)...)
			if code != c.want || !strings.Contains(out+stderr, c.text) {
				t.Errorf("exit %d, output %q; want %d mentioning %q", code, out+stderr, c.want, c.text)
			}
		})
	}
}

// TestChildEnvironment: the server gets dirlockd's variables, replacing any
// the caller had, and keeps every other variable (other DIRLOCKD_ ones too).
func TestChildEnvironment(t *testing.T) {
	dir := testutil.DataDir(t)
	cmd := exec.Command(bin, "run", "-D", dir, "--", "sh", "-c",
		`echo "token=$DIRLOCKD_TOKEN fd=$DIRLOCKD_LOCK_FD datadir=$DIRLOCKD_DATADIR other=$DIRLOCKD_OTHER notify=$NOTIFY_SOCKET"; `+
			`readlink /proc/self/fd/3`)
	cmd.Env = append(os.Environ(), "DIRLOCKD_OTHER=kept", "DIRLOCKD_TOKEN=forged", "NOTIFY_SOCKET=/forged")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if !strings.Contains(s, "other=kept") || strings.Contains(s, "forged") || !strings.Contains(s, "fd=3 datadir="+dir) ||
		!strings.Contains(s, filepath.Join(dir, pidfile.DefaultName)) || !strings.Contains(s, "notify=@dirlockd/notify/") {
		t.Errorf("server's view:\n%s", s)
	}
}

func TestSignals(t *testing.T) {
	dir := testutil.DataDir(t)
	// The server reports the signals it gets on stdout.
	w := startRun(t, nil, dir, nil, "sh", "-c",
		`trap 'echo got-usr1' USR1; trap 'echo got-hup' HUP; trap 'echo got-usr2' USR2; echo up; while :; do sleep 0.05; done`)
	waitHeld(t, dir, "ready", 10*time.Second)
	eventually(t, 5*time.Second, "the server's trap set-up", func() bool { return strings.Contains(w.Stdout(), "up") })
	for s, want := range map[syscall.Signal]string{syscall.SIGUSR1: "got-usr1", syscall.SIGHUP: "got-hup", syscall.SIGUSR2: "got-usr2"} {
		w.Cmd.Process.Signal(s)
		eventually(t, 5*time.Second, "the server to get "+s.String(), func() bool { return strings.Contains(w.Stdout(), want) })
	}
	w.Cmd.Process.Signal(syscall.SIGTERM)
	if code := w.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGTERM) {
		t.Errorf("exit %d after SIGTERM, want 143", code)
	}
}

// TestStopTimeoutKills: a server that ignores SIGTERM gets SIGKILL after
// --stop-timeout, the whole group with --signal-group. Neither a second
// SIGTERM nor the server's own STOPPING=1 may disarm that timer.
func TestStopTimeoutKills(t *testing.T) {
	// As sd_notify(3) does, "@" stands for the abstract namespace's NUL.
	const announce = `python3 -c 'import os, socket; a = os.environ["NOTIFY_SOCKET"]; a = "\0" + a[1:] if a[0] == "@" else a; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"STOPPING=1", a)'; `
	for _, c := range []struct{ name, prelude string }{
		{"plain", ""},
		{"server said STOPPING=1", announce},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := testutil.DataDir(t)
			w := startRun(t, nil, dir, []string{"--stop-timeout", "500ms", "--signal-group"},
				"sh", "-c", `trap '' TERM; `+c.prelude+`echo up; while :; do sleep 0.05; done`)
			waitHeld(t, dir, "", 10*time.Second)
			eventually(t, 5*time.Second, "the server's set-up", func() bool { return strings.Contains(w.Stdout(), "up") })
			if c.prelude != "" {
				eventually(t, 5*time.Second, "status stopping", func() bool { _, r := check(t, dir); return r.Status == "stopping" })
			}
			start := time.Now()
			w.Cmd.Process.Signal(syscall.SIGTERM)
			time.Sleep(100 * time.Millisecond)
			w.Cmd.Process.Signal(syscall.SIGTERM) // must not restart or cancel the timer
			code := w.WaitExit(t, 10*time.Second)
			if took := time.Since(start); code != exitcode.SignalBase+int(syscall.SIGKILL) || took < 400*time.Millisecond || took > 3*time.Second {
				t.Errorf("exit %d after %v, want 137 after the 500ms stop timeout; stderr:\n%s", code, took, w.Stderr())
			}
			if !strings.Contains(w.Stderr(), "sending SIGKILL") {
				t.Errorf("no SIGKILL logged:\n%s", w.Stderr())
			}
			if code, r := check(t, dir); code != 0 {
				t.Errorf("check after the kill: exit %d, %+v (processes of the group left behind?)", code, r)
			}
		})
	}
}

// TestRecheck: deleting or replacing the pidfile under a running wrapper is
// found by the recheck, and the server is stopped within two intervals.
func TestRecheck(t *testing.T) {
	for _, damage := range []string{"deleted", "replaced"} {
		t.Run(damage, func(t *testing.T) {
			dir := testutil.DataDir(t)
			const interval = 300 * time.Millisecond
			w := startRun(t, nil, dir, []string{"--recheck", interval.String()}, "sleep", "300")
			waitHeld(t, dir, "ready", 10*time.Second)
			path := filepath.Join(dir, pidfile.DefaultName)
			eventually(t, 5*time.Second, "a heartbeat", func() bool {
				b, _ := os.ReadFile(path)
				r, err := pidfile.Parse(b)
				return err == nil && r.Extra["heartbeat"] != ""
			})
			start := time.Now()
			if damage == "deleted" {
				os.Remove(path)
			} else {
				os.WriteFile(path+".new", []byte("not yours\n"), 0o600)
				os.Rename(path+".new", path)
			}
			code := w.WaitExit(t, 10*time.Second)
			if took := time.Since(start); took > 2*interval+200*time.Millisecond {
				t.Errorf("server stopped %v after the pidfile was %s; want within two intervals (%v)", took, damage, 2*interval)
			}
			if code != exitcode.SignalBase+int(syscall.SIGTERM) || !strings.Contains(w.Stderr(), "interlock is lost") {
				t.Errorf("exit %d; stderr:\n%s", code, w.Stderr())
			}
		})
	}
}

// TestPID1ReapsOrphans runs dirlockd as PID 1 of a new PID namespace. The
// server leaves a grandchild behind that exits; dirlockd must reap it.
func TestPID1ReapsOrphans(t *testing.T) {
	dir := testutil.DataDir(t)
	w := startRun(t, []string{"unshare", "--pid", "--fork", "--kill-child", "--mount-proc"}, dir, nil,
		"sh", "-c", `(sleep 0.2 &); echo spawned; sleep 300`)
	eventually(t, 10*time.Second, "the server to spawn its grandchild", func() bool {
		return strings.Contains(w.Stdout(), "spawned")
	})
	init := childOf(w.PID())
	// The grandchild, reparented to dirlockd, exits after 0.2 s; until
	// dirlockd reaps it, it stays its child, a zombie.
	var kids, zombies []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		kids, zombies = nil, nil
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", init))
		for _, f := range tasks {
			b, _ := os.ReadFile(f)
			kids = append(kids, strings.Fields(string(b))...)
		}
		for _, k := range kids {
			b, _ := os.ReadFile("/proc/" + k + "/stat")
			if i := bytes.LastIndexByte(b, ')'); i > 0 && len(b) > i+2 && b[i+2] == 'Z' {
				zombies = append(zombies, k)
			}
		}
		if len(kids) == 1 && len(zombies) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(kids) != 1 || len(zombies) > 0 {
		t.Errorf("children of dirlockd as PID 1 after 10s: %v, zombies %v; want only the server (the grandchild reaped)", kids, zombies)
	}
	syscall.Kill(init, syscall.SIGTERM)
	if code := w.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGTERM) {
		t.Errorf("exit %d; stderr:\n%s", code, w.Stderr())
	}
}

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

// TestInternalError: a failure of dirlockd's own (here: the notify socket,
// failed by the faultinject build) exits 70 and still releases the lock.
func TestInternalError(t *testing.T) {
	dir := testutil.DataDir(t)
	cmd := exec.Command(binFault, "run", "-D", dir, "--", "true")
	cmd.Env = append(os.Environ(), interlock.FaultEnv+"=notify")
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != exitcode.Internal || !strings.Contains(string(out), "cannot listen for notifications") {
		t.Errorf("exit %d, output %s; want 70", code, out)
	}
	if code, r := check(t, dir); code != 0 || r.Status != "stopped" {
		t.Errorf("after the internal error: check exit %d, %+v; want free and a record marked stopped", code, r)
	}
	if code, out, _ := dirlockd(t, "version"); code != 0 || !strings.HasPrefix(out, "dirlockd ") {
		t.Errorf("version: exit %d, %q", code, out)
	}
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

// TestClosedLogPipe: when whatever reads dirlockd's output goes away, the
// wrapper must not die of SIGPIPE and leave its server unsupervised: it keeps
// going, and releases when the server exits.
func TestClosedLogPipe(t *testing.T) {
	dir := testutil.DataDir(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "-D", dir, "--", "sh", "-c", `trap '' PIPE; sleep 1; echo late || true`)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	waitHeld(t, dir, "ready", 10*time.Second)
	r.Close() // the reader is gone: every later write gets EPIPE
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		t.Fatal("dirlockd run did not exit")
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit %d (%v), want 0: dirlockd must survive a closed log pipe", code, cmd.ProcessState)
	}
	if code, rep := check(t, dir); code != 0 || rep.Status != "stopped" {
		t.Errorf("after the server exited: check %d, %+v; want a clean release", code, rep)
	}
}

// jsonLog decodes a --log-format json log: one object per line, none torn.
func jsonLog(t *testing.T, log string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for i, line := range strings.Split(strings.TrimSuffix(log, "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %d is not a JSON object: %q: %v", i+1, line, err)
		}
		recs = append(recs, m)
	}
	return recs
}

// jsonRecord returns the first record with message msg.
func jsonRecord(t *testing.T, recs []map[string]any, msg string) map[string]any {
	t.Helper()
	for _, m := range recs {
		if m["msg"] == msg {
			return m
		}
	}
	t.Fatalf("no %q record in %v", msg, recs)
	return nil
}

// TestLogJSONTypes: in --log-format json, lock methods, signals, states and
// statuses are strings; PIDs, segment ids and durations (in nanoseconds) are
// numbers (docs/cli.md, Logging).
func TestLogJSONTypes(t *testing.T) {
	dir := testutil.DataDir(t)
	w := startRun(t, nil, dir, []string{"--log-format", "json"}, "sleep", "300")
	r := waitHeld(t, dir, "ready", 10*time.Second)

	code, _, stderr := dirlockd(t, "wait", "-D", dir, "--for", "free", "--timeout", "200ms", "--log-format", "json")
	if code != 1 {
		t.Fatalf("wait --for free while held: exit %d, %s", code, stderr)
	}
	timedOut := jsonRecord(t, jsonLog(t, stderr), "timed out")
	code, _, stderr = dirlockd(t, "stop", "-D", dir, "--timeout", "10s", "--log-format", "json")
	if code != 0 {
		t.Fatalf("stop: exit %d, %s", code, stderr)
	}
	stop := jsonLog(t, stderr)
	if code := w.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGTERM) {
		t.Fatalf("wrapper exit %d after stop, want 143; stderr:\n%s", code, w.Stderr())
	}
	run := jsonLog(t, w.Stderr())

	for _, c := range []struct {
		rec  map[string]any
		key  string
		want any // a string, or a float64 for a number
	}{
		{jsonRecord(t, run, "acquired the data directory"), "lock_method", "flock"},
		{jsonRecord(t, run, "acquired the data directory"), "datadir", dir},
		{jsonRecord(t, run, "started the server"), "pid", float64(r.ChildPID)},
		{jsonRecord(t, run, "the server is ready"), "via", "started"},
		{jsonRecord(t, run, "stopping the server"), "reason", "signal SIGTERM"},
		{jsonRecord(t, run, "stopping the server"), "stop_timeout", float64(time.Minute)},
		{jsonRecord(t, run, "the server was killed by a signal"), "signal", "SIGTERM"},
		{jsonRecord(t, run, "the server was killed by a signal"), "pid", float64(r.ChildPID)},
		{jsonRecord(t, stop, "signalled the holder; waiting for the lock to be released"), "signal", "SIGTERM"},
		{jsonRecord(t, stop, "signalled the holder; waiting for the lock to be released"), "pid", float64(w.PID())},
		{jsonRecord(t, stop, "signalled the holder; waiting for the lock to be released"), "timeout", float64(10 * time.Second)},
		{timedOut, "state", "held"},
		{timedOut, "for", "free"},
		{timedOut, "timeout", float64(200 * time.Millisecond)},
	} {
		if got := c.rec[c.key]; got != c.want {
			t.Errorf("%q record: %s = %#v (%T), want %#v (%T)", c.rec["msg"], c.key, got, got, c.want, c.want)
		}
	}
	acq := jsonRecord(t, run, "acquired the data directory")
	if key, ok := acq["shm_key"].(string); !ok || !strings.HasPrefix(key, "0x") {
		t.Errorf("shm_key = %#v, want a string 0x…", acq["shm_key"])
	}
	if _, ok := acq["shm_id"].(float64); !ok {
		t.Errorf("shm_id = %#v, want a number", acq["shm_id"])
	}
	if _, ok := jsonRecord(t, stop, "stopped")["after"].(float64); !ok {
		t.Errorf("stop's after = %#v, want a number", jsonRecord(t, stop, "stopped")["after"])
	}
}

// TestStopLogOrder: what a Ctrl-C (SIGINT to dirlockd, the terminal's
// foreground process group; the server has a group of its own) logs, in
// order, as README.md and docs/cli.md quote it: the stop begins, the server
// dies or exits, the directory is released, and nothing follows.
func TestStopLogOrder(t *testing.T) {
	for _, c := range []struct {
		name   string
		argv   []string
		exit   int
		server string // the line that says how the server ended
	}{
		{"killed", []string{"sleep", "infinity"}, 130, `msg="the server was killed by a signal"`},
		{"exited", []string{"sh", "-c", `trap 'exit 7' INT; echo up; while :; do sleep 0.05; done`}, 7, `msg="the server exited"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := testutil.DataDir(t)
			w := startRun(t, nil, dir, nil, c.argv...)
			waitHeld(t, dir, "ready", 10*time.Second)
			if c.argv[0] == "sh" {
				eventually(t, 5*time.Second, "the server's trap", func() bool { return strings.Contains(w.Stdout(), "up") })
			}
			w.Cmd.Process.Signal(syscall.SIGINT)
			if code := w.WaitExit(t, 10*time.Second); code != c.exit {
				t.Fatalf("exit %d after SIGINT, want %d; stderr:\n%s", code, c.exit, w.Stderr())
			}
			lines := strings.Split(strings.TrimSuffix(w.Stderr(), "\n"), "\n")
			want := []string{`msg="stopping the server"`, c.server, `msg="released the data directory"`}
			at := -1
			for _, k := range want {
				i := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, k) })
				if i <= at {
					t.Fatalf("%s at line %d, want it after line %d (%v in order, last); log:\n%s", k, i+1, at+1, want, w.Stderr())
				}
				at = i
			}
			if at != len(lines)-1 {
				t.Errorf("lines after the release:\n%s", strings.Join(lines[at+1:], "\n"))
			}
			if !strings.Contains(lines[0], `msg="acquired the data directory"`) || !strings.Contains(w.Stderr(), `reason="signal SIGINT"`) {
				t.Errorf("log:\n%s", w.Stderr())
			}
		})
	}
}
