package integration

// Tests of what installs dirlockd beside the system's tools: the version
// make build links in, the systemd unit template, make install and make
// deb; the man pages are tested in man_test.go, the shell completions in
// completion_test.go.

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/dirlockd/dirlockd/internal/testutil"
)

// makeTarget runs make in the repository root with vars and fails the test
// if it fails.
func makeTarget(t *testing.T, target string, vars ...string) string {
	t.Helper()
	out, err := exec.Command("make", append([]string{"-s", "-C", "..", target}, vars...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("make %s %v: %v\n%s", target, vars, err, out)
	}
	return string(out)
}

// TestVersion: make build links in git describe's version; version and
// --version print it with the Go toolchain.
func TestVersion(t *testing.T) {
	b := filepath.Join(t.TempDir(), "dirlockd")
	makeTarget(t, "build", "BIN="+b)
	desc, err := exec.Command("git", "-C", "..", "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		t.Fatalf("git describe: %v", err)
	}
	want := "dirlockd " + strings.TrimSpace(string(desc)) + " (" + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(b, arg).Output()
		if err != nil || string(out) != want {
			t.Errorf("make build; dirlockd %s: %q, %v; want %q", arg, out, err, want)
		}
	}
	// The tests' own build has no linked version: the build info's, and
	// the same toolchain.
	code, out, stderr := dirlockd(t, "version")
	if code != 0 || !strings.HasPrefix(out, "dirlockd ") || !strings.Contains(out, "("+runtime.Version()+" ") || stderr != "" {
		t.Errorf("dirlockd version (go build): exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

// goBuild builds dirlockd with extra go build flags into dir.
func goBuild(t *testing.T, dir string, flags ...string) string {
	t.Helper()
	b := filepath.Join(dir, "dirlockd")
	out, err := exec.Command("go", append(append([]string{"build"}, flags...), "-o", b, "../cmd/dirlockd")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %v: %v\n%s", flags, err, out)
	}
	return b
}

// files lists the regular files under root, relative to it.
func files(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// TestInstall: make install with DESTDIR and PREFIX puts every file in
// place, the installed binary and man page work, make uninstall removes them
// all.
func TestInstall(t *testing.T) {
	tmp := t.TempDir()
	dest := filepath.Join(tmp, "root")
	vars := []string{"DESTDIR=" + dest, "PREFIX=/opt/dl", "BIN=" + filepath.Join(tmp, "dirlockd"), "AGENT=" + filepath.Join(tmp, "dirlockd-etcd")}
	makeTarget(t, "install", vars...)
	var want []string
	for _, f := range installed {
		want = append(want, filepath.Join("opt/dl", f))
	}
	slices.Sort(want)
	if got := files(t, dest); !slices.Equal(got, want) {
		t.Fatalf("make install %v installed %q, want %q", vars, got, want)
	}
	prefix := filepath.Join(dest, "opt/dl")
	if out, err := exec.Command(filepath.Join(prefix, "bin/dirlockd"), "version").Output(); err != nil || !strings.HasPrefix(string(out), "dirlockd ") {
		t.Errorf("installed dirlockd version: %q, %v", out, err)
	}
	agentFound(t, filepath.Join(prefix, "bin/dirlockd"))
	// The unit names the binary where it runs from: PREFIX, without DESTDIR.
	unit, err := os.ReadFile(filepath.Join(prefix, "lib/systemd/system/dirlockd@.service"))
	if err != nil || !strings.Contains(string(unit), "\nExecStart=/opt/dl/bin/dirlockd run ") || regexp.MustCompile(`@[a-z]+@`).Match(unit) {
		t.Errorf("installed unit: ExecStart does not name /opt/dl/bin/dirlockd (%v):\n%s", err, unit)
	}
	// man finds the installed pages by name on the installed MANPATH.
	cmd := exec.Command("man", "--warnings", "dirlockd-run")
	cmd.Env = append(os.Environ(), "MANPATH="+filepath.Join(prefix, "share/man"), "MANPAGER=cat", "MANWIDTH=100", "LC_ALL=C")
	// A warning of groff's says "warning:"; the page's own text may say
	// "warning".
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "dirlockd-run - run a server under the interlock") || strings.Contains(string(out), "warning:") {
		t.Errorf("man dirlockd-run with MANPATH=PREFIX/share/man: %v\n%s", err, out)
	}
	makeTarget(t, "uninstall", vars...)
	if left := files(t, dest); len(left) > 0 {
		t.Errorf("make uninstall left %q", left)
	}
}

// agentFound checks that the installed binary b finds its etcd agent in
// ../libexec/dirlockd: check --etcd against nothing listening reaches the
// agent, which says etcd is unavailable, rather than that it is missing.
func agentFound(t *testing.T, b string) {
	t.Helper()
	dir := testutil.DataDir(t)
	out, _ := exec.Command(b, "check", "-D", dir, "--etcd", "127.0.0.1:1", "--lease-key", "/k", "--etcd-dial-timeout", "1s").CombinedOutput()
	if !strings.Contains(string(out), "etcd at 127.0.0.1:1 is unavailable") {
		t.Errorf("%s check --etcd: the etcd agent was not found where it is installed:\n%s", b, out)
	}
}

// TestSystemdUnit: systemd-analyze verify passes on instances of the
// installed template, bare and with each drop-in example (it checks that
// ExecStart's binary exists and that the Documentation= man pages open),
// and fails when the binary is not where ExecStart says.
func TestSystemdUnit(t *testing.T) {
	tmp := t.TempDir()
	prefix := filepath.Join(tmp, "prefix")
	makeTarget(t, "install", "PREFIX="+prefix, "BIN="+filepath.Join(tmp, "dirlockd"), "AGENT="+filepath.Join(tmp, "dirlockd-etcd"))
	units := filepath.Join(tmp, "units")
	if err := os.Mkdir(units, 0o755); err != nil {
		t.Fatal(err)
	}
	tmpl, err := os.ReadFile(filepath.Join(prefix, "lib/systemd/system/dirlockd@.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nType=notify\n", "\nKillMode=mixed\n", "\nTimeoutStopSec=90s\n", " run --stop-timeout 60s "} {
		if !strings.Contains(string(tmpl), want) {
			t.Errorf("dirlockd@.service lacks %q", want)
		}
	}
	if err := os.WriteFile(filepath.Join(units, "dirlockd@.service"), tmpl, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, ex := range []string{"redis", "postgresql"} {
		d := filepath.Join(units, "dirlockd@"+ex+".service.d")
		b, err := os.ReadFile(filepath.Join(prefix, "share/doc/dirlockd/systemd", ex+".conf"))
		if err == nil {
			err = os.Mkdir(d, 0o755)
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(d, ex+".conf"), b, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	verify := func(instance string) (string, error) {
		cmd := exec.Command("systemd-analyze", "verify", filepath.Join(units, instance))
		cmd.Env = append(os.Environ(), "MANPATH="+filepath.Join(prefix, "share/man"))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, instance := range []string{"dirlockd@var-lib-app.service", "dirlockd@redis.service", "dirlockd@postgresql.service"} {
		if out, err := verify(instance); err != nil || out != "" {
			t.Errorf("systemd-analyze verify %s: %v\n%s", instance, err, out)
		}
	}
	// The test can fail: without the binary, verify refuses the unit.
	if err := os.Rename(filepath.Join(prefix, "bin/dirlockd"), filepath.Join(prefix, "bin/moved")); err != nil {
		t.Fatal(err)
	}
	if out, err := verify("dirlockd@redis.service"); err == nil || !strings.Contains(out, "bin/dirlockd") {
		t.Errorf("systemd-analyze verify with the binary gone: %v, %q; want a failure naming it", err, out)
	}
}

// TestDeb: make deb builds a package with dpkg-deb; unpacked with dpkg -x
// into a scratch root, its binary runs and its man page renders.
func TestDeb(t *testing.T) {
	tmp := t.TempDir()
	makeTarget(t, "deb", "DEBDIR="+tmp, "BIN="+filepath.Join(tmp, "dirlockd"), "AGENT="+filepath.Join(tmp, "dirlockd-etcd"))
	debs, _ := filepath.Glob(filepath.Join(tmp, "dirlockd_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb DEBDIR=%s made %q, want one dirlockd_*.deb", tmp, debs)
	}
	info, err := exec.Command("dpkg-deb", "--field", debs[0], "Package", "Version", "Architecture").Output()
	if err != nil || !strings.Contains(string(info), "Package: dirlockd\n") {
		t.Errorf("dpkg-deb --field %s: %v\n%s", debs[0], err, info)
	}
	root := filepath.Join(tmp, "x")
	if out, err := exec.Command("dpkg", "-x", debs[0], root).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -x: %v\n%s", err, out)
	}
	var want []string
	for _, f := range installed {
		if strings.HasPrefix(f, "share/man/") {
			f += ".gz"
		}
		want = append(want, filepath.Join("usr", f))
	}
	slices.Sort(want)
	if got := files(t, root); !slices.Equal(got, want) {
		t.Errorf("the package holds %q, want %q", got, want)
	}
	out, err := exec.Command(filepath.Join(root, "usr/bin/dirlockd"), "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "dirlockd ") || !strings.Contains(string(out), runtime.Version()) {
		t.Errorf("packaged dirlockd version: %q, %v", out, err)
	}
	agentFound(t, filepath.Join(root, "usr/bin/dirlockd"))
	text, warnings := renderMan(t, filepath.Join(root, "usr/share/man/man1/dirlockd.1.gz"))
	if warnings != "" || !strings.Contains(text, "dirlockd - one server process tree per data directory") {
		t.Errorf("man -l the packaged dirlockd.1.gz: warnings %q\n%s", warnings, text)
	}
	unit, _ := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/dirlockd@.service"))
	if !strings.Contains(string(unit), "\nExecStart=/usr/bin/dirlockd run ") {
		t.Errorf("packaged unit does not start /usr/bin/dirlockd:\n%s", unit)
	}
}
