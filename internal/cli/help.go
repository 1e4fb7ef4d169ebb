package cli

import (
	"fmt"
	"io"
	"slices"

	"github.com/spf13/pflag"
)

// HelpWidth is the widest line a --help should write: a terminal's, the
// width flag usages are wrapped to. HelpLines is the most lines it should
// take, a screen: what does not fit belongs in the man page.
const (
	HelpWidth = 80
	HelpLines = 60
)

// A Group is a titled group of flags, by name: "FLAG", or "COMMAND/FLAG"
// for a flag that one command places elsewhere than the others do.
type Group struct {
	Title string
	Flags []string
}

// OtherFlags is the title of the group of the flags no Group places.
const OtherFlags = "Other flags"

// A FlagGroup is one group of a command's visible flags.
type FlagGroup struct {
	Title string
	Flags *pflag.FlagSet
}

// GroupFlags sorts the visible flags of command cmd's flag set fs into
// groups, in the order of groups, leaving out empty ones; a flag is looked
// up as "cmd/FLAG", then as "FLAG". Flags no group places come last, as
// OtherFlags.
func GroupFlags(groups []Group, cmd string, fs *pflag.FlagSet) []FlagGroup {
	place := func(name string) string {
		for _, key := range []string{cmd + "/" + name, name} {
			for _, g := range groups {
				if slices.Contains(g.Flags, key) {
					return g.Title
				}
			}
		}
		return OtherFlags
	}
	sets := map[string]*pflag.FlagSet{}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		t := place(f.Name)
		if sets[t] == nil {
			sets[t] = pflag.NewFlagSet(t, pflag.ContinueOnError)
			sets[t].SortFlags = false
		}
		sets[t].AddFlag(f)
	})
	var out []FlagGroup
	for _, g := range groups {
		if s := sets[g.Title]; s != nil {
			out = append(out, FlagGroup{g.Title, s})
		}
	}
	if s := sets[OtherFlags]; s != nil {
		out = append(out, FlagGroup{OtherFlags, s})
	}
	return out
}

// Help is a command's --help: its usage, what it does, examples, its flags
// by group, and where the rest is told, in that order, as git's, cargo's
// and kubectl's are laid out.
type Help struct {
	Usage    []string    // the usage lines, each a whole command line
	Brief    string      // what the command does: a few short lines
	Examples string      // indented command lines, each ending in a newline
	Groups   []FlagGroup // the flags, by GroupFlags
	More     string      // the last line: where the rest is told
}

// Write writes the help to w, the flags wrapped at HelpWidth.
func (h *Help) Write(w io.Writer) {
	fmt.Fprint(w, "Usage:\n")
	for _, s := range h.Usage {
		fmt.Fprintf(w, "  %s\n", s)
	}
	fmt.Fprintf(w, "\n%s\n", h.Brief)
	if h.Examples != "" {
		fmt.Fprintf(w, "\nExamples:\n%s", h.Examples)
	}
	for _, g := range h.Groups {
		fmt.Fprintf(w, "\n%s:\n%s", g.Title, g.Flags.FlagUsagesWrapped(HelpWidth))
	}
	fmt.Fprintf(w, "\n%s\n", h.More)
}
