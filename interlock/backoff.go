package interlock

import (
	mrand "math/rand/v2"
	"time"
)

// backoff paces the retries on a busy lock that nobody proves to hold: each
// pause is drawn from [d/2, 3d/2), so that waiters started together do not
// retry in step, and d doubles up to max.
type backoff struct{ d, max time.Duration }

func (b *backoff) next() time.Duration {
	p := b.d/2 + mrand.N(b.d)
	b.d = min(2*b.d, b.max)
	return p
}
