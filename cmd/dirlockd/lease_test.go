package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

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

// TestLeaseFlags: a lease flag without --etcd is a usage error.
func TestLeaseFlags(t *testing.T) {
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
