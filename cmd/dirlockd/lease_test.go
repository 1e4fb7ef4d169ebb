package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// TestNoEtcdLinked: dirlockd links nothing of etcd's client or gRPC, with
// or without the man page generator: Go runs every linked package's
// initialisation at start, and the binary without --etcd must not pay for
// it. The client lives in dirlockd-etcd (package internal/lease/agent).
func TestNoEtcdLinked(t *testing.T) {
	for _, tags := range []string{"", "manpages"} {
		out, err := exec.Command("go", "list", "-tags", tags, "-deps", "github.com/dirlockd/dirlockd/cmd/dirlockd").CombinedOutput()
		if err != nil {
			t.Fatalf("go list: %v\n%s", err, out)
		}
		deps := strings.Fields(string(out))
		if !slices.Contains(deps, "github.com/dirlockd/dirlockd/internal/lease") {
			t.Fatalf("go list -deps does not list internal/lease/agent: is this the list of dirlockd's packages?\n%s", out)
		}
		for _, d := range deps {
			if strings.HasPrefix(d, "go.etcd.io/") || strings.HasPrefix(d, "google.golang.org/") || d == "github.com/dirlockd/dirlockd/internal/lease/agent" {
				t.Errorf("dirlockd (tags %q) links %s", tags, d)
			}
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
