package integration

import (
	"strings"
	"testing"

	"github.com/dirlockd/dirlockd/internal/exitcode"
)

// TestHelp: help goes to standard output, with exit 0 and nothing on
// standard error (docs/cli.md); a command line that cannot be obeyed gets the
// summary on standard error and exit 64.
func TestHelp(t *testing.T) {
	type want struct {
		code             int
		stdout, stderr   []string // must contain each
		noStdout, noErrs bool     // must be empty
	}
	summary := []string{"Usage:\n  dirlockd run -D DIR", "\n  completion  ", "\n  version  ", "Global flags", "\nExamples:\n  dirlockd run"}
	cases := map[string]want{
		"":                                  {code: exitcode.Usage, stderr: summary, noStdout: true},
		"bogus":                             {code: exitcode.Usage, stderr: append([]string{"unknown command \"bogus\"\n"}, summary...), noStdout: true},
		"chek":                              {code: exitcode.Usage, stderr: append([]string{`unknown command "chek"; did you mean "check"?`}, summary...), noStdout: true},
		"-V":                                {stdout: []string{"dirlockd "}, noErrs: true},
		"--version":                         {stdout: []string{"dirlockd "}, noErrs: true},
		"run -D /tmp --ready-notfy -- true": {code: exitcode.Usage, stderr: []string{"unknown flag: --ready-notfy (did you mean --ready-notify?)"}, noStdout: true},
		"help":                              {stdout: summary, noErrs: true},
		"-h":                                {stdout: summary, noErrs: true},
		"--help":                            {stdout: summary, noErrs: true},
		"version -h":                        {stdout: []string{"Usage:\n  dirlockd version\n"}, noErrs: true},
		"help version":                      {stdout: []string{"Usage:\n  dirlockd version\n"}, noErrs: true},
		"version x":                         {code: exitcode.Usage, stderr: []string{`dirlockd version: unexpected argument "x"`}, noStdout: true},
		"completion -h":                     {stdout: []string{"Usage:\n  dirlockd completion bash|zsh|fish\n"}, noErrs: true},
		"help completion":                   {stdout: []string{"Usage:\n  dirlockd completion bash|zsh|fish\n"}, noErrs: true},
		"completion":                        {code: exitcode.Usage, stderr: []string{"dirlockd completion: want one of bash, zsh or fish"}, noStdout: true},
		"completion tcsh":                   {code: exitcode.Usage, stderr: []string{"dirlockd completion: want one of bash, zsh or fish"}, noStdout: true},
		"__man /tmp":                        {code: exitcode.Usage, stderr: []string{`unknown command "__man"`}, noStdout: true}, // only with -tags manpages
	}
	for _, c := range []string{"run", "check", "status", "stop", "wait", "stress"} {
		w := want{stdout: []string{"Usage:\n  dirlockd " + c + " -D DIR", "\nInterlock:\n  -D, --datadir", "\nOutput and logging:\n", "--log-format", "\nExamples:\n  ", "man dirlockd-" + c}, noErrs: true}
		cases[c+" --help"], cases[c+" -h"], cases["help "+c] = w, w, w
		// --help wins over a bad data directory and stray arguments, not
		// over an unknown flag before it.
		cases[c+" -D /nonexistent --help extra"] = w
		bad := want{code: exitcode.Usage, stderr: []string{"unknown flag: --bogus", `Run "dirlockd ` + c + ` --help"`}, noStdout: true}
		if c == "status" {
			bad.code = exitcode.StatusUnknown // LSB: unknown
		}
		cases[c+" --bogus --help"] = bad
	}
	for line, w := range cases {
		code, out, stderr := cliEnv(t, nil, strings.Fields(line)...)
		if code != w.code || (w.noStdout && out != "") || (w.noErrs && stderr != "") {
			t.Errorf("dirlockd %s: exit %d, stdout %q, stderr %q; want exit %d, stdout empty %v, stderr empty %v",
				line, code, out, stderr, w.code, w.noStdout, w.noErrs)
			continue
		}
		for _, s := range w.stdout {
			if !strings.Contains(out, s) {
				t.Errorf("dirlockd %s: stdout lacks %q:\n%s", line, s, out)
			}
		}
		for _, s := range w.stderr {
			if !strings.Contains(stderr, s) {
				t.Errorf("dirlockd %s: stderr lacks %q:\n%s", line, s, stderr)
			}
		}
	}
}
