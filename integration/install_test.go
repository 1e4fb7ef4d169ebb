package integration

// Tests of what installs dirlockd beside the system's tools: the version
// make build links in, the man pages, the shell completions, the systemd
// unit template, make install and make deb.

import (
	"bytes"
	"fmt"
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

// renderMan formats a man page as man(1) shows it, wide enough that no flag
// is broken across lines, and returns the text and man's warnings.
func renderMan(t *testing.T, page string) (string, string) {
	t.Helper()
	cmd := exec.Command("man", "--warnings", "-l", page)
	cmd.Env = append(os.Environ(), "MANWIDTH=250", "MANPAGER=cat", "LC_ALL=C", "MAN_KEEP_FORMATTING=")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("man -l %s: %v\n%s", page, err, stderr.String())
	}
	col := exec.Command("col", "-b")
	col.Stdin = &out
	text, err := col.Output()
	if err != nil {
		t.Fatalf("col -b: %v", err)
	}
	return string(text), stderr.String()
}

var longFlag = regexp.MustCompile(`--[a-z][a-z-]*`)

// section returns the text of a man page's section (or of --help's), up to
// the next heading: a line that starts with a letter.
func section(text, heading string) string {
	_, rest, ok := strings.Cut(text, "\n"+heading+"\n")
	if !ok {
		return ""
	}
	if i := regexp.MustCompile(`\n[A-Za-z]`).FindStringIndex(rest); i != nil {
		rest = rest[:i[0]]
	}
	return rest
}

// flagNames are the distinct long flags named at the start of the lines of
// text (the flag lists of --help and of a man page's OPTIONS).
func flagNames(text string) []string {
	var names []string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "-D,"))
		if f := longFlag.FindString(line); f != "" && strings.HasPrefix(line, f) && !slices.Contains(names, f) {
			names = append(names, f)
		}
	}
	slices.Sort(names)
	return names
}

// TestManPages: the committed man pages are what make man generates now
// from the help texts and flag sets, each lists exactly the flags its
// command's --help does, and man and mandoc render them without a warning.
func TestManPages(t *testing.T) {
	committed, err := filepath.Glob("../man/*.1")
	if err != nil || len(committed) == 0 {
		t.Fatalf("no man pages in ../man (%v): run make man", err)
	}
	tmp := t.TempDir()
	gen := goBuild(t, tmp, "-tags", "manpages")
	fresh, seeded := filepath.Join(tmp, "fresh"), filepath.Join(tmp, "seeded")
	for _, d := range []string{fresh, seeded} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Seeded with the committed pages, the generator keeps their dates
	// where the text is the same: what differs then is what they say.
	for _, p := range committed {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(seeded, filepath.Base(p)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{fresh, seeded} {
		if out, err := exec.Command(gen, "__man", d).CombinedOutput(); err != nil || len(out) > 0 {
			t.Fatalf("dirlockd __man %s: %v, output %q", d, err, out)
		}
	}
	names := func(paths []string) []string {
		var n []string
		for _, p := range paths {
			n = append(n, filepath.Base(p))
		}
		return n
	}
	generated, _ := filepath.Glob(filepath.Join(fresh, "*.1"))
	if !slices.Equal(names(generated), names(committed)) {
		t.Errorf("make man generates %v, man/ holds %v: run make man and commit man/", names(generated), names(committed))
	}
	for _, p := range committed {
		want, _ := os.ReadFile(filepath.Join(seeded, filepath.Base(p)))
		got, _ := os.ReadFile(p)
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not what make man generates from the help: run make man and commit man/", p)
		}
	}

	// What man shows agrees with --help, flag for flag.
	_, top, _ := dirlockd(t, "--help")
	pages := map[string]string{"dirlockd.1": section(top, "Global flags (every command but completion and version):")}
	for _, line := range strings.Split(section(top, "Usage:"), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			_, help, _ := dirlockd(t, f[1], "--help")
			pages["dirlockd-"+f[1]+".1"] = section(help, "Flags:")
		}
	}
	if len(pages) != len(committed) {
		t.Errorf("dirlockd --help lists %d commands, man/ has %d pages besides dirlockd.1", len(pages)-1, len(committed)-1)
	}
	for name, help := range pages {
		p := filepath.Join("..", "man", name)
		text, warnings := renderMan(t, p)
		if warnings != "" {
			t.Errorf("man --warnings -l %s: %s", p, warnings)
		}
		heading := "OPTIONS"
		if name == "dirlockd.1" {
			heading = "GLOBAL FLAGS"
		}
		if got, want := flagNames(section(text, heading)), flagNames(help); !slices.Equal(got, want) {
			t.Errorf("%s %s lists %v; --help lists %v", p, heading, got, want)
		}
		if name != "dirlockd.1" && !strings.Contains(text, "NAME\n       "+strings.TrimSuffix(name, ".1")+" - ") {
			t.Errorf("%s: no NAME line for whatis:\n%s", p, text)
		}
	}
	lint := exec.Command("mandoc", append([]string{"-T", "lint", "-W", "warning"}, committed...)...)
	if out, err := lint.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("mandoc -T lint -W warning: %v\n%s", err, out)
	}
}

// TestBashCompletion loads dirlockd completion bash into a real bash (no
// rc files, no bash-completion package) and asks the completion function
// what it offers, as bash does on TAB: COMP_WORDS and COMP_CWORD set, the
// function called, COMPREPLY read.
func TestBashCompletion(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"data-a", "data-b", "other"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "data-file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "completion.bash")
	code, out, stderr := dirlockd(t, "completion", "bash")
	if code != 0 || stderr != "" {
		t.Fatalf("dirlockd completion bash: exit %d, stderr %q", code, stderr)
	}
	if err := os.WriteFile(script, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		line string // the words typed, the last the one completed; _ an empty word
		want []string
	}{
		{"_", []string{"help", "run", "check", "status", "stop", "wait", "stress", "completion", "version"}},
		{"st", []string{"status", "stop", "stress"}},
		{"help w", []string{"wait"}},
		{"completion _", []string{"bash", "fish", "zsh"}},
		{"run --lock", []string{"--lock-method"}},
		{"check --js", []string{"--json"}},
		{"stress --w", []string{"--workers"}}, // not the hidden --worker
		{"run --lock-method _", []string{"auto", "flock", "ofd", "posix"}},
		{"run --lock-method = o", []string{"ofd"}}, // bash splits --lock-method=o at the =
		{"status --log-format _", []string{"auto", "text", "logfmt", "json"}},
		{"run --on-lost _", []string{"shutdown", "log"}},
		{"stop --signal _", []string{"TERM", "INT", "QUIT", "HUP", "KILL", "USR1", "USR2"}},
		{"stop -D data-a --signal U", []string{"USR1", "USR2"}},
		{"wait --for _", []string{"free", "ready"}},
		{"run -D _", []string{"data-a", "data-b", "other"}},
		{"check -D data-a -D da", []string{"data-a", "data-b"}},
		{"run --datadir = da", []string{"data-a", "data-b"}},
		{"run --wait _", nil}, // a duration: nothing to offer, not the files
		{"run -D data-a -- data-", nil},
		{"run -D data-a -- sleep data-", []string{"data-a", "data-b", "data-file"}},
	}
	var prog strings.Builder
	prog.WriteString("source " + script + "\n")
	for _, c := range cases {
		words := []string{bin}
		for _, w := range strings.Fields(c.line) {
			words = append(words, strings.ReplaceAll(w, "_", ""))
		}
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		fmt.Fprintf(&prog, "COMP_WORDS=(%s); COMP_CWORD=%d; COMP_LINE=%q; COMP_POINT=${#COMP_LINE}; COMPREPLY=(); _dirlockd; echo \"${COMPREPLY[*]}\"\n",
			strings.Join(quoted, " "), len(words)-1, strings.Join(words, " "))
	}
	sh := exec.Command("bash", "--norc", "--noprofile", "-c", prog.String())
	sh.Dir = dir
	var got, errb bytes.Buffer
	sh.Stdout, sh.Stderr = &got, &errb
	if err := sh.Run(); err != nil || errb.Len() > 0 {
		t.Fatalf("bash: %v\n%s", err, errb.String())
	}
	lines := strings.Split(strings.TrimSuffix(got.String(), "\n"), "\n")
	if len(lines) != len(cases) {
		t.Fatalf("bash printed %d lines for %d cases:\n%s", len(lines), len(cases), got.String())
	}
	for i, c := range cases {
		got := strings.Fields(lines[i])
		slices.Sort(got)
		got = slices.Compact(got)
		want := slices.Sorted(slices.Values(c.want))
		if !slices.Equal(got, want) {
			t.Errorf("dirlockd %s<TAB>: bash offers %q, want %q", c.line, got, want)
		}
	}
	if !strings.Contains(out, "complete -F _dirlockd dirlockd") {
		t.Errorf("dirlockd completion bash does not register _dirlockd for dirlockd:\n%s", out)
	}
}

// TestFishZshCompletion asks a real fish what it completes with dirlockd
// completion fish loaded (complete -C runs fish's completion engine), and
// a real interactive zsh what TAB does.
func TestFishZshCompletion(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"data-a", "data-b"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// fish completes the command by its name: dirlockd, on the PATH.
	if err := os.Symlink(bin, filepath.Join(dir, "dirlockd")); err != nil {
		t.Fatal(err)
	}
	scripts := map[string]string{}
	for _, sh := range []string{"fish", "zsh"} {
		code, out, stderr := dirlockd(t, "completion", sh)
		if code != 0 || stderr != "" {
			t.Fatalf("dirlockd completion %s: exit %d, stderr %q", sh, code, stderr)
		}
		scripts[sh] = filepath.Join(dir, "completion."+sh)
		if err := os.WriteFile(scripts[sh], []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	zshCompletion(t, dir, scripts["zsh"])
	cases := map[string][]string{
		"dirlockd st":                  {"status", "stop", "stress"},
		"dirlockd run --lock-method ":  {"auto", "flock", "ofd", "posix"},
		"dirlockd run --lock-method=o": {"--lock-method=ofd"},
		"dirlockd stop --sig":          {"--signal"},
		"dirlockd run -D data-a":       {"data-a/"},
		"dirlockd run --datadir=da":    {"--datadir=data-a/", "--datadir=data-b/"},
	}
	for line, want := range cases {
		sh := exec.Command("fish", "--no-config", "-c", fmt.Sprintf("source %s; complete -C'%s'", scripts["fish"], line))
		sh.Dir = dir
		sh.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"))
		out, err := sh.Output()
		if err != nil {
			t.Errorf("fish: complete -C'%s': %v", line, err)
			continue
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			got = append(got, strings.Split(l, "\t")[0]) // without fish's description
		}
		slices.Sort(got)
		if want = slices.Sorted(slices.Values(want)); !slices.Equal(got, want) {
			t.Errorf("fish: %s<TAB> offers %q, want %q", line, got, want)
		}
	}
}

// installed are the files make install puts under PREFIX.
var installed = []string{
	"bin/dirlockd",
	"libexec/dirlockd/dirlockd-etcd",
	"share/man/man1/dirlockd.1",
	"share/man/man1/dirlockd-run.1",
	"share/man/man1/dirlockd-check.1",
	"share/man/man1/dirlockd-status.1",
	"share/man/man1/dirlockd-stop.1",
	"share/man/man1/dirlockd-wait.1",
	"share/man/man1/dirlockd-stress.1",
	"share/man/man1/dirlockd-completion.1",
	"share/man/man1/dirlockd-version.1",
	"share/bash-completion/completions/dirlockd",
	"share/zsh/site-functions/_dirlockd",
	"share/fish/vendor_completions.d/dirlockd.fish",
	"lib/systemd/system/dirlockd@.service",
	"share/doc/dirlockd/systemd/redis.conf",
	"share/doc/dirlockd/systemd/postgresql.conf",
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
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "dirlockd-run - run a server under the interlock") || strings.Contains(string(out), "warning") {
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

// zshCompletion types each line and a TAB into an interactive zsh (on a
// pseudo-terminal, through zsh/zpty) with the script installed as
// _dirlockd in $fpath, and waits until what zsh shows matches: the list it
// offers, or the word it completed. A case that never matches fails at
// the timeout.
func zshCompletion(t *testing.T, dir, script string) {
	t.Helper()
	fpath := filepath.Join(dir, "zsh-functions")
	b, err := os.ReadFile(script)
	if err == nil {
		err = os.Mkdir(fpath, 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(fpath, "_dirlockd"), b, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
	driver := `zmodload zsh/zpty
zpty z 'zsh -f -i'
zpty -w z 'fpath=(` + fpath + ` $fpath); autoload -U compinit; compinit -u -D; setopt nobeep'
zpty -w -n z "$1"$'\t'
zpty -r z out "$2" && print -r -- ok
zpty -d z
`
	cases := map[string]string{
		"dirlockd run --lock-method ": "*auto*flock*ofd*posix*",
		"dirlockd st":                 "*status*stop*stress*",
		"dirlockd run -D da":          "*-D data-*", // the common prefix of data-a/ and data-b/
		"dirlockd stop --signal=U":    "*--signal=USR*",
		"dirlockd run --on-l":         "*--on-lost*",
	}
	for line, pattern := range cases {
		cmd := exec.Command("timeout", "30", "zsh", "-f", "-c", driver, "zsh", line, pattern)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "HOME="+dir, "TERM=dumb")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.HasSuffix(string(out), "ok\n") {
			t.Errorf("zsh: %s<TAB> did not show %s within 30s: %v\n%q", line, pattern, err, out)
		}
	}
}
