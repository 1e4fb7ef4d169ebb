package lease

import (
	"testing"
	"time"
)

// TestNewTiming: the defaults scale with the TTL and fit in it; a stop
// timeout that leaves no room is refused.
func TestNewTiming(t *testing.T) {
	for _, c := range []struct {
		ttl, stop             time.Duration
		renew, term, kill, ok time.Duration // term and kill: before the deadline
	}{
		{ttl: 3 * time.Second, renew: time.Second, term: 900 * time.Millisecond, kill: 300 * time.Millisecond, ok: 1},
		{ttl: 10 * time.Second, renew: 10 * time.Second / 3, term: 3 * time.Second, kill: time.Second, ok: 1},
		{ttl: 10 * time.Second, stop: 5 * time.Second, renew: 10 * time.Second / 3, term: 6 * time.Second, kill: time.Second, ok: 1},
		{ttl: 3 * time.Second, stop: 2 * time.Second},
		{ttl: 10 * time.Second, stop: 6 * time.Second},
	} {
		tm, err := NewTiming(c.ttl, c.stop)
		if (err == nil) != (c.ok != 0) {
			t.Errorf("ttl %v stop %v: err %v", c.ttl, c.stop, err)
			continue
		}
		if err == nil && (tm.Renew != c.renew || tm.Stop+tm.Margin != c.term || tm.Margin != c.kill) {
			t.Errorf("ttl %v stop %v: %+v", c.ttl, c.stop, tm)
		}
	}
}
