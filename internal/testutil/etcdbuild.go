package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// EtcdVersions are the etcd servers the lease tests run against: Debian's
// (3.4, EtcdBinary) and two newer ones built from the Go module proxy
// (EtcdBinaryFor). "" stands for Debian's.
var EtcdVersions = []string{"", "v3.5.36", "v3.6.16"}

// EtcdVersionName names a version of EtcdVersions in test names.
func EtcdVersionName(v string) string {
	if v == "" {
		return "debian"
	}
	return v
}

// EtcdBinaryFor returns the etcd server of version (a module version of
// go.etcd.io/etcd/server/v3, such as "v3.6.16"; "" is Debian's EtcdBinary),
// building it on first use. `go install` refuses the server module (its
// go.mod has replace directives), so it is built from a scratch module that
// requires it, and cached under the user's cache directory
// ($XDG_CACHE_HOME or ~/.cache)/dirlockd-etcd/VERSION/etcd: the next run
// reuses it. A build takes about 20 s with a warm module cache.
func EtcdBinaryFor(t testing.TB, version string) string {
	t.Helper()
	if version == "" {
		return EtcdBinary
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatalf("no cache directory for etcd %s: %v", version, err)
	}
	dir := filepath.Join(cache, "dirlockd-etcd", version)
	bin := filepath.Join(dir, "etcd")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	scratch := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = scratch
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building etcd %s: go %s: %v\n%s", version, strings.Join(args, " "), err, out)
		}
	}
	run("mod", "init", "dirlockd.test/etcdbuild")
	run("get", "go.etcd.io/etcd/server/v3@"+version)
	// Built beside its final name and renamed over it: a concurrent run
	// never sees half a binary.
	tmp := filepath.Join(dir, fmt.Sprintf(".etcd.%d", os.Getpid()))
	run("build", "-o", tmp, "go.etcd.io/etcd/server/v3")
	if err := os.Rename(tmp, bin); err != nil {
		os.Remove(tmp)
		t.Fatal(err)
	}
	t.Logf("built etcd %s from the module proxy: %s", version, bin)
	return bin
}
