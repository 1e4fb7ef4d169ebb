//go:build !faultinject

package interlock

// faultPoint is a no-op: release builds carry no fault injection (see
// fault_on.go, built with -tags faultinject).
func faultPoint(Step) {}
