package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// printable returns s with every character that could end a line, fake one
// or drive a terminal written as a Go escape: control characters (\n, \r,
// \t, \x1b, \x7f, \u0085), line and paragraph separators, bidirectional
// overrides, and bytes that are not UTF-8 (\xff). Names in dirlockd's
// output are chosen by others: a data directory's path, a record's
// hostname, a pidfile's content, another process's command line. Like ls
// and systemd, dirlockd prints them escaped, so that one line of output is
// one line, and says what it says. Everything else, backslashes included,
// is left as it is.
func printable(s string) string {
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

// printf is fmt.Fprintf for text output with every string, error and
// fmt.Stringer argument passed through printable: the format's own
// newlines stand, an argument's cannot.
func printf(w io.Writer, format string, a ...any) {
	for i, v := range a {
		switch v := v.(type) {
		case string:
			a[i] = printable(v)
		case error:
			a[i] = printable(v.Error())
		case fmt.Stringer:
			a[i] = printable(v.String())
		}
	}
	fmt.Fprintf(w, format, a...)
}

// escapingHandler passes each log record's message and attribute values
// through printable, for the text format: tint prints the message bare,
// and a value's terminal escapes raw when colouring (cut out when not).
// logfmt quotes, and JSON escapes, what needs it by themselves.
type escapingHandler struct{ slog.Handler }

func (h escapingHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, printable(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(escapeAttr(a))
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h escapingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	esc := make([]slog.Attr, len(as))
	for i, a := range as {
		esc[i] = escapeAttr(a)
	}
	return escapingHandler{h.Handler.WithAttrs(esc)}
}

func (h escapingHandler) WithGroup(name string) slog.Handler {
	return escapingHandler{h.Handler.WithGroup(name)}
}

func escapeAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, printable(v.String()))
	case slog.KindGroup:
		g := v.Group()
		esc := make([]any, len(g))
		for i, ga := range g {
			esc[i] = escapeAttr(ga)
		}
		return slog.Group(a.Key, esc...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, printable(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, printable(x.String()))
		case []string:
			esc := make([]string, len(x))
			for i, s := range x {
				esc[i] = printable(s)
			}
			return slog.Any(a.Key, esc)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
