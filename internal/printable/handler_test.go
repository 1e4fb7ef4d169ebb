package printable

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
)

// recorder is a handler that writes each record as "msg k=v k=v", values
// with %v and nothing escaped: what tint does with a value when colouring.
type recorder struct {
	b     *strings.Builder
	attrs []slog.Attr
	group string
}

func (r recorder) Enabled(context.Context, slog.Level) bool { return true }

func (r recorder) Handle(_ context.Context, rec slog.Record) error {
	r.b.WriteString(rec.Message)
	write := func(a slog.Attr) bool {
		fmt.Fprintf(r.b, " %s%s=%v", r.group, a.Key, a.Value.Any())
		return true
	}
	for _, a := range r.attrs {
		write(a)
	}
	rec.Attrs(write)
	r.b.WriteString("\n")
	return nil
}

func (r recorder) WithAttrs(as []slog.Attr) slog.Handler {
	r.attrs = append(append([]slog.Attr(nil), r.attrs...), as...)
	return r
}

func (r recorder) WithGroup(name string) slog.Handler {
	r.group += name + "."
	return r
}

type stringer string

func (s stringer) String() string { return string(s) }

// TestHandler: everything another may have chosen reaches the handler
// escaped, whatever its kind; numbers and the rest pass unchanged.
func TestHandler(t *testing.T) {
	var b strings.Builder
	log := slog.New(Handler(recorder{b: &b}))
	const evil = "a\nb\x1b[31m"
	log.With("dir", evil).Info("msg "+evil,
		"s", evil, "err", errors.New(evil), "str", stringer(evil), "list", []string{evil, "ok"},
		slog.Group("grp", "in", evil), "n", 42, "ip", net.IPv4(127, 0, 0, 1))
	log.WithGroup("g").Warn(evil, "s", evil)
	got := b.String()
	want := `msg a\nb\x1b[31m dir=a\nb\x1b[31m s=a\nb\x1b[31m err=a\nb\x1b[31m str=a\nb\x1b[31m list=[a\nb\x1b[31m ok] grp=[in=a\nb\x1b[31m] n=42 ip=127.0.0.1` + "\n" +
		`a\nb\x1b[31m g.s=a\nb\x1b[31m` + "\n"
	if got != want {
		t.Errorf("logged:\n%q\nwant:\n%q", got, want)
	}
	if strings.Count(got, "\n") != 2 || strings.Contains(got, "\x1b") {
		t.Errorf("a raw newline or escape got through: %q", got)
	}
}
