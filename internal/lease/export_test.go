package lease

import "time"

// OnRenew makes cfg call f after each renewal that moved the deadline, with the time the
// renewal was sent and the time its answer arrived.
func OnRenew(cfg *Config, f func(sent, received time.Time)) { cfg.onRenew = f }
