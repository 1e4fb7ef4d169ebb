package main

import (
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/dirlockd/dirlockd/internal/testutil"
)

// TestNoEtcdWithoutFlag: a command without --etcd runs none of etcd's or
// gRPC's code: no goroutine of theirs exists afterwards.
func TestNoEtcdWithoutFlag(t *testing.T) {
	t.Setenv("DIRLOCKD_ETCD", "")
	dir := testutil.DataDir(t)
	for _, args := range [][]string{{"check", "-D", dir}, {"status", "-D", dir}} {
		dispatch(args, io.Discard, io.Discard)
	}
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, pkg := range []string{"go.etcd.io/", "google.golang.org/grpc"} {
		if strings.Contains(stacks, pkg) {
			t.Fatalf("a goroutine of %s runs without --etcd:\n%s", pkg, stacks)
		}
	}
}

// TestLeaseTiming: the defaults scale with the TTL and fit in it; a stop
// timeout that leaves no room is refused.
func TestLeaseTiming(t *testing.T) {
	for _, c := range []struct {
		ttl, stop             time.Duration
		renew, term, kill, ok time.Duration // term and kill: before the deadline
	}{
		{ttl: 3 * time.Second, renew: time.Second, term: 900 * time.Millisecond, kill: 300 * time.Millisecond, ok: 1},
		{ttl: 10 * time.Second, renew: 10 * time.Second / 3, term: 3 * time.Second, kill: time.Second, ok: 1},
		{ttl: 10 * time.Second, stop: 5 * time.Second, renew: 10 * time.Second / 3, term: 6 * time.Second, kill: time.Second, ok: 1},
		{ttl: 3 * time.Second, stop: 2 * time.Second},
		{ttl: 10 * time.Second, stop: 6 * time.Second},
	} {
		f := leaseFlags{ttl: c.ttl, stopTimeout: c.stop}
		tm, err := f.timing()
		if (err == nil) != (c.ok != 0) {
			t.Errorf("ttl %v stop %v: err %v", c.ttl, c.stop, err)
			continue
		}
		if err == nil && (tm.renew != c.renew || tm.stop+tm.margin != c.term || tm.margin != c.kill) {
			t.Errorf("ttl %v stop %v: %+v", c.ttl, c.stop, tm)
		}
	}
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	var f leaseFlags
	addLeaseFlags(fs, &f, leaseRun)
	t.Setenv("DIRLOCKD_ETCD", "")
	if err := fs.Parse([]string{"--lease-ttl", "3s"}); err != nil {
		t.Fatal(err)
	}
	if on, err := f.settle(fs); on || err == nil {
		t.Errorf("--lease-ttl without --etcd: %v %v, want a usage error", on, err)
	}
}
