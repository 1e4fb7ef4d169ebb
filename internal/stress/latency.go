package stress

import (
	"maps"
	"math"
	"slices"
	"time"
)

// Latencies is a histogram of durations in buckets 1% wide: quantiles of a
// long run's millions of acquisitions cost little memory and can be asked
// for every progress tick, within 1% of the exact value.
type Latencies struct {
	n      int
	max    time.Duration
	counts map[int]int // bucket (see bucketOf) → samples
}

// growth is the ratio between the bounds of successive buckets.
const growth = 1.01

func bucketOf(d time.Duration) int {
	if d < 1 {
		return -1
	}
	return int(math.Log(float64(d)) / math.Log(growth))
}

// upper is the upper bound of bucket b.
func upper(b int) time.Duration {
	if b < 0 {
		return 0
	}
	return time.Duration(math.Ceil(math.Pow(growth, float64(b+1))))
}

// Add records one sample.
func (l *Latencies) Add(d time.Duration) {
	if l.counts == nil {
		l.counts = map[int]int{}
	}
	l.n++
	l.max = max(l.max, d)
	l.counts[bucketOf(d)]++
}

// Merge adds every sample of o.
func (l *Latencies) Merge(o *Latencies) {
	if l.counts == nil {
		l.counts = map[int]int{}
	}
	l.n += o.n
	l.max = max(l.max, o.max)
	for b, c := range o.counts {
		l.counts[b] += c
	}
}

// Count returns the number of samples.
func (l *Latencies) Count() int { return l.n }

// Quantile returns the q-quantile (0 < q ≤ 1), 0 without samples.
func (l *Latencies) Quantile(q float64) time.Duration {
	if l.n == 0 {
		return 0
	}
	rank := max(1, int(math.Ceil(q*float64(l.n))))
	seen := 0
	for _, b := range slices.Sorted(maps.Keys(l.counts)) {
		if seen += l.counts[b]; seen >= rank {
			return min(upper(b), l.max)
		}
	}
	return l.max
}

// Percentiles summarises a distribution of acquisition waits.
type Percentiles struct {
	P50 time.Duration `json:"p50"`
	P99 time.Duration `json:"p99"`
	Max time.Duration `json:"max"`
}

// Percentiles returns the median, the 99th percentile and the maximum.
func (l *Latencies) Percentiles() Percentiles {
	return Percentiles{P50: l.Quantile(0.5), P99: l.Quantile(0.99), Max: l.max}
}
