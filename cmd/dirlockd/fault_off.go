//go:build !faultinject

package main

// fault is a no-op in release builds (see fault_on.go, built with -tags
// faultinject).
func fault(string) error { return nil }
