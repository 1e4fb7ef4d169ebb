package torture

import "strings"

// All returns every scenario, in report order; only, when not empty, keeps
// those whose name contains it.
func All(only string) []Scenario {
	var all []Scenario
	for _, family := range [][]Scenario{Storms(), Crashes(), Orphans(), Identities(), StorageFaults(), BadInputs()} {
		for _, s := range family {
			if only == "" || strings.Contains(s.Name, only) {
				all = append(all, s)
			}
		}
	}
	return all
}
