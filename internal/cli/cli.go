// Package cli is the machinery of a command line made of subcommands, with
// nothing of any one program in it: --help laid out by flag groups, shell
// completion answered from the flag sets the commands parse, "did you
// mean" for a mistyped command or flag, the logger of --log-format and
// --log-level, and the version a build recorded. Package manpage renders
// the same flag sets as man pages.
//
// A program describes each command once, by its flag set (spf13/pflag) and
// a few texts; help, completion and the man pages are all made from that,
// so that none of them can say something the others do not. What a flag's
// man page entry adds to its --help line (Detail) and what its value
// completes to (CompleteValues, CompleteDirs, CompleteFiles) ride on the
// flag as pflag annotations.
package cli

import (
	"strings"

	"github.com/spf13/pflag"
)

// annotationDetail is a flag's annotation with what its man page says of it
// beyond its --help line.
const annotationDetail = "cli/detail"

// Detail sets what the man page says of flag name after its --help line.
func Detail(fs *pflag.FlagSet, name, text string) {
	fs.SetAnnotation(name, annotationDetail, []string{text})
}

// DetailOf returns what Detail set for f, or "".
func DetailOf(f *pflag.Flag) string {
	if d := f.Annotations[annotationDetail]; len(d) > 0 {
		return d[0]
	}
	return ""
}

// UnknownFlag reports the flag of a pflag error about a flag it does not
// know ("unknown flag: --port" gives --port, "unknown shorthand flag: 'p'
// in -p" gives -p).
func UnknownFlag(err error) (string, bool) {
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "unknown flag: "); ok {
		return f, true
	}
	if _, f, ok := strings.Cut(msg, "unknown shorthand flag: "); ok {
		if _, arg, ok := strings.Cut(f, " in "); ok {
			return arg, true
		}
	}
	return "", false
}
