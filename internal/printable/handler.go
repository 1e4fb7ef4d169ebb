package printable

import (
	"context"
	"fmt"
	"log/slog"
)

// Handler wraps h so that each log record's message and attribute values
// (strings, errors, fmt.Stringers, string slices, in groups too) pass
// through String first. It is for handlers that print them bare: tint's
// text handler prints the message as it is, and a value's terminal escapes
// raw when colouring. slog's own text (logfmt) and JSON handlers quote or
// escape what needs it by themselves.
func Handler(h slog.Handler) slog.Handler { return escapingHandler{h} }

type escapingHandler struct{ slog.Handler }

func (h escapingHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, String(r.Message), r.PC)
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
		return slog.String(a.Key, String(v.String()))
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
			return slog.String(a.Key, String(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, String(x.String()))
		case []string:
			esc := make([]string, len(x))
			for i, s := range x {
				esc[i] = String(s)
			}
			return slog.Any(a.Key, esc)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
