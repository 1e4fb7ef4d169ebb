// Package manpage writes man pages the way a program's --help is written:
// from its texts and the flag sets its commands parse (package cli), so
// that a page cannot list a flag --help does not, or miss one it does.
//
// A page is built as Markdown (Page) and rendered to roff by go-md2man
// (Write). Import it only from a build of the program that makes its man
// pages (a build tag): the program's release binary then carries no
// Markdown parser.
package manpage

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/spf13/pflag"

	"github.com/dirlockd/dirlockd/internal/cli"
)

// DatePlaceholder stands for the page's date in its .TH line until Write
// settles it.
const DatePlaceholder = "@DATE@"

// A Page is a man page being written, in Markdown.
type Page struct {
	b strings.Builder
}

// New begins the page of name in section, with its title line (.TH: the
// date left as DatePlaceholder; source and manual as the title line's
// fourth and fifth fields) and its NAME section ("name - summary"). The page
// carries no version, so that it changes only with what it says.
func New(name string, section int, source, manual, summary string) *Page {
	p := new(Page)
	fmt.Fprintf(&p.b, "# %s %d \"%s\" \"%s\" \"%s\"\n\n# NAME\n\n%s - %s\n\n",
		strings.ToUpper(name), section, DatePlaceholder, source, manual, name, Escape(summary))
	return p
}

// Section begins a section: "DESCRIPTION", "OPTIONS", ...
func (p *Page) Section(title string) { fmt.Fprintf(&p.b, "# %s\n\n", title) }

// Subsection begins a subsection, its title literal text.
func (p *Page) Subsection(title string) { fmt.Fprintf(&p.b, "## %s\n\n", Escape(title)) }

// Markdown adds md as it is: a paragraph, or the start of one.
func (p *Page) Markdown(md string) { p.b.WriteString(md) }

// Synopsis adds a usage line: prog in bold, then line as literal text.
func (p *Page) Synopsis(prog, line string) {
	fmt.Fprintf(&p.b, "**%s** %s\n\n", prog, Escape(line))
}

// Text adds help text: runs of unindented lines are paragraphs, to be
// filled; indented lines (lists, commands) stay as they are, as
// preformatted text.
func (p *Page) Text(text string) {
	for _, para := range strings.Split(text, "\n\n") {
		lines := strings.Split(para, "\n")
		for len(lines) > 0 {
			pre := strings.HasPrefix(lines[0], " ")
			n := 1
			for n < len(lines) && strings.HasPrefix(lines[n], " ") == pre {
				n++
			}
			if pre {
				fmt.Fprintf(&p.b, "```\n%s\n```\n\n", strings.Join(lines[:n], "\n"))
			} else {
				fmt.Fprintf(&p.b, "%s\n\n", Escape(strings.Join(lines[:n], " ")))
			}
			lines = lines[n:]
		}
	}
}

// Code adds text as one preformatted block; it ends in a newline.
func (p *Page) Code(text string) { fmt.Fprintf(&p.b, "```\n%s```\n\n", text) }

// An Item is one entry of a definition list: EXIT STATUS, ENVIRONMENT,
// FILES.
type Item struct{ Term, Meaning string }

// Items adds items as a definition list, the terms in bold.
func (p *Page) Items(items []Item) {
	for _, e := range items {
		fmt.Fprintf(&p.b, "**%s**\n: %s\n\n", Escape(e.Term), Escape(e.Meaning))
	}
}

// Flags adds fs's visible flags as a definition list: what --help says of
// each, its value's name, its default, and what cli.Detail adds.
func (p *Page) Flags(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		value, usage := pflag.UnquoteUsage(f)
		if f.Shorthand != "" {
			fmt.Fprintf(&p.b, "**-%s**, ", f.Shorthand)
		}
		fmt.Fprintf(&p.b, "**--%s**", f.Name)
		if value != "" {
			fmt.Fprintf(&p.b, " *%s*", value)
		}
		if d := f.DefValue; d != "" && d != "0" && d != "0s" && d != "false" && d != "[]" {
			usage += " (default " + d + ")"
		}
		if d := cli.DetailOf(f); d != "" {
			usage += ". " + d
		}
		fmt.Fprintf(&p.b, "\n: %s\n\n", Escape(usage))
	})
}

// SeeAlso adds references to other pages, "NAME(SECTION)" each, as SEE
// ALSO lists them: the names in bold, separated by commas.
func (p *Page) SeeAlso(refs ...string) {
	see := make([]string, len(refs))
	for i, r := range refs {
		name, sec, _ := strings.Cut(r, "(")
		see[i] = "**" + name + "**(" + sec
	}
	p.b.WriteString(strings.Join(see, ", ") + "\n")
}

// String returns the page's Markdown.
func (p *Page) String() string { return p.b.String() }

var (
	special    = regexp.MustCompile("[\\\\`*_\\[\\]<>#|~]")
	lineMarker = regexp.MustCompile(`^[-+:]`)   // a list item, a definition
	numbered   = regexp.MustCompile(`^(\d+)\.`) // a numbered list item
)

// Escape makes s literal text in Markdown, on one line. A line that would
// begin a list or a definition has its marker escaped: "\-", "\:", and
// "1\." (a backslash before the digit would be printed, not escape it).
func Escape(s string) string {
	s = special.ReplaceAllString(s, `\$0`)
	s = lineMarker.ReplaceAllString(s, `\$0`)
	return numbered.ReplaceAllString(s, `$1\.`)
}
