package torture

// Crashes: SIGKILL at every fault point of Acquire and Release, at random
// times while holding, and SIGSTOP/SIGCONT of a holder.
func Crashes() []Scenario { return nil }
