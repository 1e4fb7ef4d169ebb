package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/pflag"
)

// Shell completion follows cobra's model, the one kubectl and gh use: the
// script a shell loads is a few lines of glue that call back "dirlockd
// __complete WORDS..." with the words typed so far, and dirlockd answers from
// the flag sets its commands parse. A flag added to a command is completed
// without touching any script; values come from the flag's annotations
// (completeValues, completeDirs, completeFiles).

// completeCommand is the hidden command the completion scripts call.
const completeCommand = "__complete"

// Annotations on a flag that say what its value completes to.
const (
	annotationValues = "dirlockd/complete-values" // the values themselves
	annotationKind   = "dirlockd/complete-kind"   // "dirs" or "files": the shell's own
)

func completeValues(fs *pflag.FlagSet, name string, values ...string) {
	fs.SetAnnotation(name, annotationValues, values)
}

func completeDirs(fs *pflag.FlagSet, name string) {
	fs.SetAnnotation(name, annotationKind, []string{"dirs"})
}

func completeFiles(fs *pflag.FlagSet, name string) {
	fs.SetAnnotation(name, annotationKind, []string{"files"})
}

// cmdComplete answers a completion script: words are the command line after
// "dirlockd" up to the cursor, the last the one being completed ("" at a new
// word). It prints the candidates, one a line, then a line that tells the
// script what to do: ":words" offer the candidates, ":dirs" or ":files" let
// the shell complete paths, ":commands" command names.
func cmdComplete(cmds []*subcommand, words []string, stdout io.Writer) int {
	cands, kind := complete(cmds, joinEquals(words))
	for _, c := range cands {
		fmt.Fprintln(stdout, c)
	}
	fmt.Fprintln(stdout, ":"+kind)
	return 0
}

// joinEquals undoes bash's splitting of "--flag=value" at the = (a word
// break there by default): "--flag", "=", "value" is "--flag=value".
func joinEquals(words []string) []string {
	var out []string
	for i := 0; i < len(words); i++ {
		if words[i] == "=" && len(out) > 0 && strings.HasPrefix(out[len(out)-1], "-") {
			out[len(out)-1] += "="
			if i+1 < len(words) {
				out[len(out)-1] += words[i+1]
				i++
			}
			continue
		}
		out = append(out, words[i])
	}
	return out
}

func complete(cmds []*subcommand, words []string) ([]string, string) {
	if len(words) == 0 {
		words = []string{""}
	}
	cur := words[len(words)-1]
	if len(words) == 1 {
		if strings.HasPrefix(cur, "-") {
			return withPrefix(cur, []string{"--help", "--version", "-h"}), "words"
		}
		names := []string{"help"}
		for _, c := range cmds {
			names = append(names, c.name)
		}
		return withPrefix(cur, names), "words"
	}
	switch words[0] {
	case "help":
		if len(words) == 2 {
			return complete(cmds, words[1:])
		}
		return nil, "words"
	case "completion":
		if len(words) == 2 {
			return withPrefix(cur, slices.Sorted(maps.Keys(completionScripts))), "words"
		}
		return nil, "words"
	}
	c := lookup(cmds, words[0])
	if c == nil {
		return nil, "words"
	}
	fs := c.flags()
	// Walk the words before the cursor: a flag that takes a value consumes
	// the next word; after "--" come the command and its arguments.
	// run's flags end at COMMAND, the first word that is not one.
	takesCommand := c.name == runDoc.name
	var pending *pflag.Flag
	for i, w := range words[1 : len(words)-1] {
		switch {
		case pending != nil:
			pending = nil
		case w == "--":
			if len(words)-3-i == 0 {
				return nil, "commands"
			}
			return nil, "files"
		case takesCommand && !strings.HasPrefix(w, "-"):
			return nil, "files" // COMMAND's arguments
		case strings.HasPrefix(w, "--") && !strings.Contains(w, "="):
			pending = takesValue(fs.Lookup(w[2:]))
		case len(w) == 2 && w[0] == '-':
			pending = takesValue(fs.ShorthandLookup(w[1:]))
		}
	}
	switch {
	case pending != nil:
		return flagValues(pending, "", cur)
	case strings.HasPrefix(cur, "--") && strings.Contains(cur, "="):
		name, val, _ := strings.Cut(cur[2:], "=")
		if f := fs.Lookup(name); f != nil {
			return flagValues(f, "--"+name+"=", val)
		}
		return nil, "words"
	case strings.HasPrefix(cur, "-"):
		var names []string
		fs.VisitAll(func(f *pflag.Flag) {
			if f.Hidden {
				return
			}
			names = append(names, "--"+f.Name)
			if f.Shorthand != "" {
				names = append(names, "-"+f.Shorthand)
			}
		})
		return withPrefix(cur, append(names, "--help", "-h")), "words"
	case takesCommand:
		return nil, "commands"
	}
	return nil, "words"
}

// takesValue returns f if it takes its value from the next word.
func takesValue(f *pflag.Flag) *pflag.Flag {
	if f == nil || f.NoOptDefVal != "" {
		return nil
	}
	return f
}

// flagValues completes the value of f from prefix, each candidate written
// after lead.
func flagValues(f *pflag.Flag, lead, prefix string) ([]string, string) {
	if kind := f.Annotations[annotationKind]; len(kind) == 1 {
		return nil, kind[0]
	}
	var out []string
	for _, v := range withPrefix(prefix, f.Annotations[annotationValues]) {
		out = append(out, lead+v)
	}
	return out, "words"
}

func withPrefix(prefix string, words []string) []string {
	var out []string
	for _, w := range words {
		if strings.HasPrefix(w, prefix) {
			out = append(out, w)
		}
	}
	return out
}

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
		if s, ok := completionScripts[args[0]]; ok {
			fmt.Fprint(stdout, s)
			return 0
		}
	}
	return usageError(stderr, "completion", "want one of bash, zsh or fish")
}

// completionScripts are the scripts dirlockd completion prints, by shell.
// Each passes the words to dirlockd __complete and acts on its last line.
var completionScripts = map[string]string{
	"bash": `# bash completion for dirlockd (dirlockd completion bash)
_dirlockd() {
    local cur=${COMP_WORDS[COMP_CWORD]} kind
    local -a out
    [[ $cur == = ]] && cur=
    mapfile -t out < <("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)
    COMPREPLY=()
    (( ${#out[@]} )) || return 0
    kind=${out[-1]}
    unset 'out[-1]'
    case $kind in
    :dirs)
        compopt -o filenames 2>/dev/null
        mapfile -t COMPREPLY < <(compgen -d -- "$cur") ;;
    :files)
        compopt -o filenames 2>/dev/null
        mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
    :commands)
        mapfile -t COMPREPLY < <(compgen -c -- "$cur") ;;
    *)
        # readline replaces only what follows the = of --flag=value.
        if [[ ${COMP_WORDS[COMP_CWORD]} == = || ${COMP_WORDS[COMP_CWORD-1]} == = ]]; then
            out=("${out[@]#*=}")
        fi
        COMPREPLY=("${out[@]}") ;;
    esac
}
complete -F _dirlockd dirlockd
`,
	"zsh": `#compdef dirlockd
# zsh completion for dirlockd (dirlockd completion zsh)
_dirlockd() {
    local -a out
    local kind
    out=("${(@f)$(${words[1]} __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    kind=${out[-1]}
    out=("${(@)out[1,-2]}")
    case $kind in
    :dirs) compset -P '*='; _files -/ ;;
    :files) compset -P '*='; _files ;;
    :commands) _command_names -e ;;
    *) compadd -Q -- "${out[@]}" ;;
    esac
}
if [[ $funcstack[1] == _dirlockd ]]; then
    _dirlockd "$@"
else
    compdef _dirlockd dirlockd
fi
`,
	"fish": `# fish completion for dirlockd (dirlockd completion fish)
function __dirlockd_complete
    set -l words (commandline -opc)
    set -l cur (commandline -ct)
    set -l out ($words[1] __complete $words[2..] $cur 2>/dev/null)
    test (count $out) -gt 0; or return
    set -l kind $out[-1]
    set -e out[-1]
    set -l lead (string match -r -- '^--[^=]*=' $cur; or echo '')
    set -l rest (string replace -r -- '^--[^=]*=' '' $cur)
    switch $kind
        case :dirs
            for d in (__fish_complete_directories $rest)
                echo $lead$d
            end
        case :files
            for f in (__fish_complete_path $rest)
                echo $lead$f
            end
        case :commands
            __fish_complete_command
        case '*'
            printf '%s\n' $out
    end
end
complete -c dirlockd -f -a '(__dirlockd_complete)'
`,
}
