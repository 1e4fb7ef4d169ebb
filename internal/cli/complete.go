package cli

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/pflag"
)

// Shell completion follows cobra's model, the one kubectl and gh use: the
// script a shell loads (Script) is a few lines of glue that call back
// "PROG __complete WORDS..." with the words typed so far, and the program
// answers from the flag sets its commands parse (Completer.Answer). A flag
// added to a command is completed without touching any script; values come
// from the flag's annotations (CompleteValues, CompleteDirs, CompleteFiles).

// CompleteCommand is the hidden command the completion scripts call: the
// program passes its arguments to Completer.Answer.
const CompleteCommand = "__complete"

// Annotations on a flag that say what its value completes to.
const (
	annotationValues = "cli/complete-values" // the values themselves
	annotationKind   = "cli/complete-kind"   // "dirs" or "files": the shell's own
)

// CompleteValues makes the value of flag name complete to values.
func CompleteValues(fs *pflag.FlagSet, name string, values ...string) {
	fs.SetAnnotation(name, annotationValues, values)
}

// CompleteDirs makes the value of flag name complete to a directory.
func CompleteDirs(fs *pflag.FlagSet, name string) {
	fs.SetAnnotation(name, annotationKind, []string{"dirs"})
}

// CompleteFiles makes the value of flag name complete to a file.
func CompleteFiles(fs *pflag.FlagSet, name string) {
	fs.SetAnnotation(name, annotationKind, []string{"files"})
}

// A Command is what completion knows of one of the program's commands.
type Command struct {
	Name string
	// Flags builds the flag set the command parses.
	Flags func() *pflag.FlagSet
	// Args, if not nil, are what the command's one argument completes to
	// (and the command takes no flags).
	Args []string
	// Exec: the command's flags end at a command line for it to run, the
	// first word that is not a flag (as env's and sudo's do).
	Exec bool
}

// A Completer answers the completion scripts of a program.
type Completer struct {
	Commands []Command
	// TopFlags are what a first word that begins with "-" completes to
	// ("--help", "--version").
	TopFlags []string
}

// Answer answers a completion script: words are the command line after
// the program's name up to the cursor, the last the one being completed
// ("" at a new word). It writes the candidates, one a line, then a line
// that tells the script what to do: ":words" offer the candidates, ":dirs"
// or ":files" let the shell complete paths, ":commands" command names.
func (c *Completer) Answer(w io.Writer, words []string) {
	cands, kind := c.Complete(joinEquals(words))
	for _, s := range cands {
		fmt.Fprintln(w, s)
	}
	fmt.Fprintln(w, ":"+kind)
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

func (c *Completer) lookup(name string) *Command {
	for i := range c.Commands {
		if c.Commands[i].Name == name {
			return &c.Commands[i]
		}
	}
	return nil
}

// Complete returns the candidates for the last of words and what kind of
// completion the shell is to do ("words", "dirs", "files", "commands"), as
// Answer writes them.
func (c *Completer) Complete(words []string) ([]string, string) {
	if len(words) == 0 {
		words = []string{""}
	}
	cur := words[len(words)-1]
	if len(words) == 1 {
		if strings.HasPrefix(cur, "-") {
			return withPrefix(cur, c.TopFlags), "words"
		}
		names := []string{"help"}
		for _, cmd := range c.Commands {
			names = append(names, cmd.Name)
		}
		return withPrefix(cur, names), "words"
	}
	if words[0] == "help" {
		if len(words) == 2 {
			return c.Complete(words[1:])
		}
		return nil, "words"
	}
	cmd := c.lookup(words[0])
	switch {
	case cmd == nil:
		return nil, "words"
	case cmd.Args != nil:
		if len(words) == 2 {
			return withPrefix(cur, cmd.Args), "words"
		}
		return nil, "words"
	}
	fs := cmd.Flags()
	// Walk the words before the cursor: a flag that takes a value consumes
	// the next word; after "--" come the command and its arguments. An
	// Exec command's flags end at the first word that is not one.
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
		case cmd.Exec && !strings.HasPrefix(w, "-"):
			return nil, "files" // the command line's arguments
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
	case cmd.Exec:
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

// Shells returns the shells Script has a script for, sorted.
func Shells() []string { return slices.Sorted(maps.Keys(scripts)) }

// Script returns the completion script of program prog for shell (bash,
// zsh or fish), and whether there is one.
func Script(shell, prog string) (string, bool) {
	s, ok := scripts[shell]
	return strings.ReplaceAll(s, "@PROG@", prog), ok
}

// scripts are the completion scripts, by shell, @PROG@ standing for the
// program's name. Each passes the words to PROG __complete and acts on its
// last line.
var scripts = map[string]string{
	"bash": `# bash completion for @PROG@ (@PROG@ completion bash)
_@PROG@() {
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
complete -F _@PROG@ @PROG@
`,
	"zsh": `#compdef @PROG@
# zsh completion for @PROG@ (@PROG@ completion zsh)
_@PROG@() {
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
if [[ $funcstack[1] == _@PROG@ ]]; then
    _@PROG@ "$@"
else
    compdef _@PROG@ @PROG@
fi
`,
	"fish": `# fish completion for @PROG@ (@PROG@ completion fish)
function __@PROG@_complete
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
complete -c @PROG@ -f -a '(__@PROG@_complete)'
`,
}
