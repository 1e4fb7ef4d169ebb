package cli

import (
	"errors"

	"github.com/spf13/pflag"
)

// Suggest returns the name among known nearest to a mistyped one, if it is
// near enough to be a typo (as git's and cargo's "did you mean"): at most
// a third of its length in edits, and at least one; "" if none is.
func Suggest(typed string, known []string) string {
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

// SuggestFlag returns, for a parse error of fs about a long flag it does
// not know, the visible flag of fs the user most likely meant (without
// "--"), or "".
func SuggestFlag(fs *pflag.FlagSet, err error) string {
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
	return Suggest(ne.GetSpecifiedName(), names)
}
