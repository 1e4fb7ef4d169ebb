package integration

// Tests of what installs dirlockd beside the system's tools: the version
// make build links in, the systemd unit template, make install and make
// deb; the man pages are tested in man_test.go, the shell completions in
// completion_test.go.

import (
	"bytes"
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
	// --help points at the guides where they are installed.
	if out, err := exec.Command(filepath.Join(prefix, "bin/dirlockd"), "run", "--help").Output(); err != nil ||
		!strings.Contains(string(out), "man dirlockd-run; guides in "+filepath.Join(prefix, "share/doc/dirlockd")+"/\n") {
		t.Errorf("installed dirlockd run --help does not point at the installed guides (%v):\n%s", err, out)
	}
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

// TestDeb: make deb builds two packages, the same bytes when built twice;
// lintian finds no error or warning in them (but for what
// debian/*.lintian-overrides explain, and it does report those once the
// overrides are gone); dpkg --root installs them into a scratch root with
// its own database, refusing dirlockd-etcd without dirlockd; the installed
// dirlockd runs, renders its man page and finds the agent for run --etcd,
// and, once dirlockd-etcd is removed, says to install it.
func TestDeb(t *testing.T) {
	tmp := t.TempDir()
	build := func(dir string) (main, etcd string) {
		t.Helper()
		makeTarget(t, "deb", "DEBDIR="+dir, "BIN="+filepath.Join(dir, "dirlockd"), "AGENT="+filepath.Join(dir, "dirlockd-etcd"))
		debs, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
		for _, d := range debs {
			switch {
			case strings.HasPrefix(filepath.Base(d), "dirlockd_"):
				main = d
			case strings.HasPrefix(filepath.Base(d), "dirlockd-etcd_"):
				etcd = d
			}
		}
		if len(debs) != 2 || main == "" || etcd == "" {
			t.Fatalf("make deb DEBDIR=%s made %q, want dirlockd_*.deb and dirlockd-etcd_*.deb", dir, debs)
		}
		return main, etcd
	}
	mainDeb, etcdDeb := build(filepath.Join(tmp, "a"))
	// Reproducible: another build, in other directories, is the same bytes.
	again := filepath.Join(tmp, "b", "deeper")
	if err := os.MkdirAll(again, 0o755); err != nil {
		t.Fatal(err)
	}
	mainAgain, etcdAgain := build(again)
	for _, pair := range [][2]string{{mainDeb, mainAgain}, {etcdDeb, etcdAgain}} {
		a, errA := os.ReadFile(pair[0])
		b, errB := os.ReadFile(pair[1])
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("make deb is not reproducible: %s and %s differ (%v, %v)", pair[0], pair[1], errA, errB)
		}
	}

	field := func(deb, name string) string {
		out, err := exec.Command("dpkg-deb", "--field", deb, name).Output()
		if err != nil {
			t.Fatalf("dpkg-deb --field %s %s: %v", deb, name, err)
		}
		return strings.TrimSpace(string(out))
	}
	version := field(mainDeb, "Version")
	for deb, want := range map[string]map[string]string{
		mainDeb: {"Package": "dirlockd", "Suggests": "dirlockd-etcd", "Depends": ""},
		etcdDeb: {"Package": "dirlockd-etcd", "Depends": "dirlockd (= " + version + ")", "Version": version},
	} {
		for name, v := range want {
			if got := field(deb, name); got != v {
				t.Errorf("%s %s: %q, want %q", filepath.Base(deb), name, got, v)
			}
		}
	}

	// lintian: nothing but what the overrides explain. Without them, it
	// reports what they override: the verdict is real.
	lintian := func(debs ...string) string {
		out, _ := exec.Command("lintian", append([]string{"--pedantic", "--display-info"}, debs...)...).CombinedOutput()
		var tags []string
		for _, l := range strings.Split(string(out), "\n") {
			if l != "" && !strings.Contains(l, "running with root privileges") {
				tags = append(tags, l)
			}
		}
		return strings.Join(tags, "\n")
	}
	if tags := lintian(mainDeb, etcdDeb); tags != "" {
		t.Errorf("lintian %s %s:\n%s", filepath.Base(mainDeb), filepath.Base(etcdDeb), tags)
	}
	bare := filepath.Join(tmp, "bare")
	if out, err := exec.Command("dpkg-deb", "-R", mainDeb, bare).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -R: %v\n%s", err, out)
	}
	if err := os.Remove(filepath.Join(bare, "usr/share/lintian/overrides/dirlockd")); err != nil {
		t.Fatal(err)
	}
	bareDeb := filepath.Join(tmp, "bare.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", bare, bareDeb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --build: %v\n%s", err, out)
	}
	if tags := lintian(bareDeb); !strings.Contains(tags, "E: dirlockd: statically-linked-binary") {
		t.Errorf("lintian of the package without its overrides does not report the overridden tag:\n%s", tags)
	}

	// What each package holds.
	contents := func(deb string) []string {
		x := filepath.Join(tmp, "x-"+filepath.Base(deb))
		if out, err := exec.Command("dpkg-deb", "-x", deb, x).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb -x %s: %v\n%s", deb, err, out)
		}
		return files(t, x)
	}
	var wantMain []string
	for _, f := range installed {
		switch {
		case strings.HasPrefix(f, "libexec/"):
			continue
		case strings.HasPrefix(f, "share/man/"):
			f += ".gz"
		case strings.HasSuffix(f, ".md"):
			f += ".gz" // every guide is over 4 kB
		}
		wantMain = append(wantMain, filepath.Join("usr", f))
	}
	wantMain = append(wantMain, "usr/share/doc/dirlockd/copyright", "usr/share/doc/dirlockd/changelog.Debian.gz", "usr/share/lintian/overrides/dirlockd")
	slices.Sort(wantMain)
	if got := contents(mainDeb); !slices.Equal(got, wantMain) {
		t.Errorf("dirlockd's package holds %q, want %q", got, wantMain)
	}
	wantEtcd := []string{"usr/libexec/dirlockd/dirlockd-etcd", "usr/share/doc/dirlockd-etcd/changelog.Debian.gz", "usr/share/doc/dirlockd-etcd/copyright", "usr/share/lintian/overrides/dirlockd-etcd"}
	if got := contents(etcdDeb); !slices.Equal(got, wantEtcd) {
		t.Errorf("dirlockd-etcd's package holds %q, want %q", got, wantEtcd)
	}

	// Install into a scratch root with dpkg's own database there.
	root := filepath.Join(tmp, "root")
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dpkg := func(args ...string) (string, error) {
		out, err := exec.Command("dpkg", append([]string{"--root=" + root}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := dpkg("-i", etcdDeb); err == nil || !strings.Contains(out, "dirlockd-etcd depends on dirlockd") {
		t.Errorf("dpkg -i dirlockd-etcd alone: %v, want a dependency problem:\n%s", err, out)
	}
	if out, err := dpkg("-i", mainDeb, etcdDeb); err != nil {
		t.Fatalf("dpkg --root -i both: %v\n%s", err, out)
	}
	if out, err := dpkg("-s", "dirlockd", "dirlockd-etcd"); err != nil || strings.Count(out, "Status: install ok installed") != 2 {
		t.Errorf("dpkg -s: %v\n%s", err, out)
	}
	bin := filepath.Join(root, "usr/bin/dirlockd")
	// No build path in the binaries (-trimpath): the source tree's is the
	// same in both builds above, so only this shows it.
	src, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{bin, filepath.Join(root, "usr/libexec/dirlockd/dirlockd-etcd")} {
		if data, err := os.ReadFile(b); err != nil || bytes.Contains(data, []byte(src)) {
			t.Errorf("%s holds the build path %s (%v)", b, src, err)
		}
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "dirlockd ") || !strings.Contains(string(out), runtime.Version()) {
		t.Errorf("packaged dirlockd version: %q, %v", out, err)
	}
	agentFound(t, bin)
	runEtcd := func() (int, string) {
		cmd := exec.Command(bin, "run", "-D", testutil.DataDir(t), "--etcd", "127.0.0.1:1", "--lease-key", "/k", "--etcd-dial-timeout", "1s", "--", "true")
		out, _ := cmd.CombinedOutput()
		return cmd.ProcessState.ExitCode(), string(out)
	}
	if code, out := runEtcd(); code != 69 || !strings.Contains(out, "etcd at 127.0.0.1:1 is unavailable") {
		t.Errorf("installed dirlockd run --etcd: exit %d, want 69 (the agent found, etcd down):\n%s", code, out)
	}
	text, warnings := renderMan(t, filepath.Join(root, "usr/share/man/man1/dirlockd.1.gz"))
	if warnings != "" || !strings.Contains(text, "dirlockd - one server process tree per data directory") {
		t.Errorf("man -l the packaged dirlockd.1.gz: warnings %q\n%s", warnings, text)
	}
	unit, _ := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/dirlockd@.service"))
	if !strings.Contains(string(unit), "\nExecStart=/usr/bin/dirlockd run ") {
		t.Errorf("packaged unit does not start /usr/bin/dirlockd:\n%s", unit)
	}
	if help, _ := exec.Command(bin, "run", "--help").Output(); !strings.Contains(string(help), "guides in "+filepath.Join(root, "usr/share/doc/dirlockd")+"/") {
		t.Errorf("packaged dirlockd run --help does not point at the installed guides:\n%s", help)
	}
	if out, err := dpkg("-r", "dirlockd-etcd"); err != nil {
		t.Fatalf("dpkg --root -r dirlockd-etcd: %v\n%s", err, out)
	}
	if code, out := runEtcd(); code != 78 || !strings.Contains(out, "install the package dirlockd-etcd") {
		t.Errorf("run --etcd without dirlockd-etcd: exit %d, want 78 saying to install it:\n%s", code, out)
	}
	if out, err := dpkg("-r", "dirlockd"); err != nil {
		t.Fatalf("dpkg --root -r dirlockd: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(root, "usr")); !os.IsNotExist(err) {
		t.Errorf("dpkg -r left %q (%v)", files(t, filepath.Join(root, "usr")), err)
	}
}
