package notify

// Reloading reports RELOADING=1: the service is reloading its configuration
// and will send READY=1 again when done.
func (m Message) Reloading() bool { return m.is("RELOADING", "1") }
