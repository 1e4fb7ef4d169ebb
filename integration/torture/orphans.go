package torture

// Orphans: a wrapper killed while processes of its server survive.
func Orphans() []Scenario { return nil }

// Identities: PID reuse and PID/IPC namespaces.
func Identities() []Scenario { return nil }
