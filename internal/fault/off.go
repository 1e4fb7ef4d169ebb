//go:build !faultinject

package fault

// At is a no-op: release builds carry no fault injection (see on.go, built
// with -tags faultinject).
func At(Step) {}

// Fail is a no-op, as At is.
func Fail(string) error { return nil }
