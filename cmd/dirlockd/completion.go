package main

import (
	"fmt"
	"io"

	"github.com/dirlockd/dirlockd/internal/cli"
)

// dirlockd's completion scripts, and the candidates they ask for (dirlockd
// __complete), are package cli's, made from the flag sets of the commands
// (completer).

var completionDoc = doc{
	name:     "completion",
	summary:  "print the shell completion script",
	synopsis: []string{"completion bash|zsh|fish"},
	brief: `Print the script that makes the shell complete dirlockd's commands, flags and
flag values. make install puts it where bash-completion, zsh and fish look;
to load one into the running shell instead:
  bash: source <(dirlockd completion bash)
  zsh:  source <(dirlockd completion zsh)    (after compinit)
  fish: dirlockd completion fish | source`,
	about: `Print the script that makes the shell complete dirlockd's commands, flags and
flag values (-D completes directories). The script calls dirlockd to compute
the candidates, so it completes what the installed dirlockd accepts.

make install puts the scripts where bash-completion, zsh and fish look for
them; to load one into the running shell instead:
  bash: source <(dirlockd completion bash)
  zsh:  source <(dirlockd completion zsh)    (after compinit)
  fish: dirlockd completion fish | source`,
	args: cli.Shells(),
	examples: `  dirlockd completion bash > /usr/share/bash-completion/completions/dirlockd
  dirlockd completion zsh > /usr/local/share/zsh/site-functions/_dirlockd
  dirlockd completion fish > ~/.config/fish/completions/dirlockd.fish
`,
}

func cmdCompletion(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 {
		if args[0] == "-h" || args[0] == "--help" {
			completionDoc.help(stdout, nil)
			return 0
		}
		if s, ok := cli.Script(args[0], "dirlockd"); ok {
			fmt.Fprint(stdout, s)
			return 0
		}
	}
	return usageError(stderr, "completion", "want one of bash, zsh or fish")
}
