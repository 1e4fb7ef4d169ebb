package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/dirlockd/dirlockd/internal/printable"
)

// escapingHandler passes each log record's message and attribute values
// through printable.String, for the text format: tint prints the message bare,
// and a value's terminal escapes raw when colouring (cut out when not).
// logfmt quotes, and JSON escapes, what needs it by themselves.
type escapingHandler struct{ slog.Handler }

func (h escapingHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, printable.String(r.Message), r.PC)
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
		return slog.String(a.Key, printable.String(v.String()))
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
			return slog.String(a.Key, printable.String(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, printable.String(x.String()))
		case []string:
			esc := make([]string, len(x))
			for i, s := range x {
				esc[i] = printable.String(s)
			}
			return slog.Any(a.Key, esc)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
