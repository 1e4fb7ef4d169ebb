package integration

// The shell completions, run in real bash, fish and zsh.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

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
		{"_", []string{"help", "run", "check", "status", "stop", "reload", "wait", "stress", "completion", "version"}},
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
		{"run -D data-a sleep data-", []string{"data-a", "data-b", "data-file"}}, // COMMAND ends run's flags
		{"run -D data-a sleep --w", nil},                                         // COMMAND's flag, not run's --wait
		{"run --kill-mode _", []string{"control-group", "mixed", "process"}},
		{"stop --surv", []string{"--survivors"}},
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
	"share/man/man1/dirlockd-reload.1",
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
	"share/doc/dirlockd/README.md",
	"share/doc/dirlockd/benchmarks.md",
	"share/doc/dirlockd/cli.md",
	"share/doc/dirlockd/design.md",
	"share/doc/dirlockd/format.md",
	"share/doc/dirlockd/lease.md",
	"share/doc/dirlockd/nfs.md",
	"share/doc/dirlockd/reliability.md",
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
