package interlock

import "time"

// WithHook returns o with a fault-injection hook called at every Step.
func WithHook(o Options, h func(Step)) Options { o.hook = h; return o }

// WithSettle returns o with a shorter settle time, for tests of orphans.
func WithSettle(o Options, d time.Duration) Options { o.settle = d; return o }
