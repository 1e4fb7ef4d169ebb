package torture

// StorageFaults: ENOSPC, read-only remounts, the data directory removed or
// renamed under a holder.
func StorageFaults() []Scenario { return nil }

// BadInputs: malformed pidfiles, wrong file types, owners and modes, foreign
// segments, segments removed under a holder, bad command lines.
func BadInputs() []Scenario { return nil }
