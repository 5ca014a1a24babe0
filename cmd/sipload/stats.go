package main

import (
	"math/bits"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// hist is a lock-free log-linear latency histogram in microseconds: exact
// below 64 µs, then 32 sub-buckets per power of two (≤ 3% error).
type hist struct {
	counts [histBuckets]atomic.Uint64
	max    atomic.Int64 // ns
}

const (
	histSub     = 32
	histBuckets = 2048
)

func histBucket(us uint64) int {
	if us < 2*histSub {
		return int(us)
	}
	e := bits.Len64(us) - 6 // us>>e is in [32, 63]
	return (e+1)*histSub + int(us>>e) - histSub
}

// histUpper is the largest value (µs) that falls in bucket i.
func histUpper(i int) uint64 {
	if i < 2*histSub {
		return uint64(i)
	}
	e := i/histSub - 1
	m := uint64(i%histSub + histSub)
	return (m+1)<<e - 1
}

func (h *hist) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[histBucket(uint64(d/time.Microsecond))].Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// quantiles returns the given quantiles (0..1) as durations (bucket upper
// bounds, so slightly pessimistic), and the total count.
func (h *hist) quantiles(qs ...float64) ([]time.Duration, uint64) {
	var c [histBuckets]uint64
	var total uint64
	for i := range h.counts {
		c[i] = h.counts[i].Load()
		total += c[i]
	}
	out := make([]time.Duration, len(qs))
	if total == 0 {
		return out, 0
	}
	for j, q := range qs {
		want := uint64(q*float64(total) + 0.5)
		if want < 1 {
			want = 1
		}
		var acc uint64
		for i := range c {
			acc += c[i]
			if acc >= want {
				out[j] = time.Duration(histUpper(i)) * time.Microsecond
				break
			}
		}
		if mx := time.Duration(h.max.Load()); out[j] > mx {
			out[j] = mx
		}
	}
	return out, total
}

// stats collects one phase (a fixed run, or one ramp step). Exchanges are
// counted in the stats that was current when they started.
type stats struct {
	started atomic.Uint64
	ok      atomic.Uint64
	failed  atomic.Uint64
	skipped atomic.Uint64 // not started: user still busy, outstanding cap, generator behind
	late    atomic.Uint64 // responses for exchanges already over (timed out) or unknown
	lat     hist
	maxLag  atomic.Int64 // ns the pacer was behind its schedule at worst

	mu    sync.Mutex
	kinds map[string]uint64
	skips map[string]uint64
}

func newStats() *stats { return &stats{kinds: map[string]uint64{}, skips: map[string]uint64{}} }

func (s *stats) success(d time.Duration) {
	s.ok.Add(1)
	s.lat.record(d)
}

func (s *stats) fail(kind string) {
	s.failed.Add(1)
	s.mu.Lock()
	s.kinds[kind]++
	s.mu.Unlock()
}

func (s *stats) skip(kind string, n uint64) {
	s.skipped.Add(n)
	s.mu.Lock()
	s.skips[kind] += n
	s.mu.Unlock()
}

type kindCount struct {
	Kind  string `json:"kind"`
	Count uint64 `json:"count"`
}

func sortedKinds(m map[string]uint64) []kindCount {
	out := make([]kindCount, 0, len(m))
	for k, v := range m {
		out = append(out, kindCount{k, v})
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Count > out[j].Count || out[i].Count == out[j].Count && out[i].Kind < out[j].Kind
	})
	return out
}
