package main

import (
	"errors"
	"fmt"

	"github.com/spf13/pflag"
)

// suggest returns the name among known nearest to a mistyped one, if it is
// near enough to be a typo (as git's and cargo's "did you mean"): at most
// a third of its length in edits, and at least one; "" if none is.
func suggest(typed string, known []string) string {
	best, bestDist := "", max(1, len([]rune(typed))/3)+1
	for _, k := range known {
		if d := editDistance(typed, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// the fewest insertions, deletions, substitutions of one rune and swaps of
// two adjacent ones that turn a into b (a swap is the commonest typo).
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// rows[i%3][j] is the distance between ra[:i] and rb[:j].
	var rows [3][]int
	for i := range rows {
		rows[i] = make([]int, len(rb)+1)
	}
	for j := range rows[0] {
		rows[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur, prev, prev2 := rows[i%3], rows[(i-1)%3], rows[(i+1)%3]
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
	}
	return rows[len(ra)%3][len(rb)]
}

// didYouMean is what "unknown command" adds for a mistyped command name:
// `; did you mean "check"?`, or "".
func didYouMean(typed string, cmds []*subcommand) string {
	names := []string{"help", "--help", "--version"}
	for _, c := range cmds {
		names = append(names, c.name)
	}
	if s := suggest(typed, names); s != "" {
		return fmt.Sprintf("; did you mean %q?", s)
	}
	return ""
}

// flagDidYouMean is what a parse error adds for a mistyped long flag:
// " (did you mean --ready-notify?)", or "".
func flagDidYouMean(fs *pflag.FlagSet, err error) string {
	var ne *pflag.NotExistError
	if !errors.As(err, &ne) || ne.GetSpecifiedName() == "" {
		return ""
	}
	var names []string
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden {
			names = append(names, f.Name)
		}
	})
	if s := suggest(ne.GetSpecifiedName(), names); s != "" {
		return " (did you mean --" + s + "?)"
	}
	return ""
}
