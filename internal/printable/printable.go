// Package printable writes names that others chose so that they cannot
// end a line of output early, forge the next one, or drive the terminal
// that shows it.
//
// A data directory's path, a record's hostname, a pidfile's content,
// another process's command line, a host named in a shared log: any of
// them may hold a newline or a terminal escape. Like ls and systemd,
// dirlockd prints them with such characters written as Go escapes: \n,
// \r, \t, \x1b, \x7f, \u0085, \u2028, \u202e, and \xff for a byte that is
// not UTF-8. Everything else, backslashes included, is left as it is, so
// that an ordinary name reads as it is.
package printable

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// String returns s with every control character (C0, DEL, C1), line or
// paragraph separator, bidirectional control and byte that is not UTF-8
// written as a Go escape.
func String(s string) string {
	i := strings.IndexFunc(s, needsEscape)
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.WriteString(s[:i])
	for s = s[i:]; s != ""; {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case needsEscape(r):
			q := strconv.QuoteRuneToASCII(r) // '\n', '\x1b', '\u202e'
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[:n])
		}
		s = s[n:]
	}
	return b.String()
}

func needsEscape(r rune) bool {
	return r == utf8.RuneError || unicode.IsControl(r) || unicode.In(r, unicode.Zl, unicode.Zp, unicode.Bidi_Control)
}

// Fprintf is fmt.Fprintf with every string, error and fmt.Stringer
// argument passed through String: the format's own newlines stand, an
// argument's cannot.
func Fprintf(w io.Writer, format string, a ...any) (int, error) {
	esc := make([]any, len(a))
	for i, v := range a {
		switch v := v.(type) {
		case string:
			esc[i] = String(v)
		case error:
			esc[i] = String(v.Error())
		case fmt.Stringer:
			esc[i] = String(v.String())
		default:
			esc[i] = v
		}
	}
	return fmt.Fprintf(w, format, esc...)
}
