package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// Memory (README "Memory"): the Go runtime lets the heap grow to twice what
// is live before it collects (GOGC=100), and returns freed pages to the
// system slowly. Under a registration storm that doubles a heap full of
// requests in flight. --memory-limit sets the runtime's soft limit
// (runtime/debug.SetMemoryLimit): near it the collector runs more often
// instead of growing the heap. It is soft: a live heap above it is never
// refused memory, the collector then only works harder (at most about half
// the CPU), so it is no substitute for a container limit.

// Without --memory-limit or GOMEMLIMIT the limit is 90 % of the cgroup's
// memory limit (a container's), if there is one, and none otherwise: a
// limit costs CPU in garbage collection exactly when a storm needs it
// (BENCHMARKS.md "Storm memory"), so it is for a process that must stay
// inside a box, which the operator sizes.
var cgroupMemoryMax = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// defaultMemoryLimit derives the limit from the cgroup files (read with
// readFile); 0 when there is none.
func defaultMemoryLimit(readFile func(string) ([]byte, error)) int64 {
	for _, f := range cgroupMemoryMax {
		b, err := readFile(f)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n <= 0 || n >= 1<<60 { // "max", or cgroup v1's "unlimited"
			return 0
		}
		return n / 10 * 9
	}
	return 0
}

// parseSize reads a byte size: a number with an optional unit B, KiB, MiB,
// GiB or TiB (as GOMEMLIMIT takes them); "0" or "off" means no limit (0).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "off" || t == "0" {
		return 0, nil
	}
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q: want a size such as 96MiB, 1GiB or 0 (no limit)", s)
	}
	return n * mult, nil
}

// applyMemoryLimit sets the runtime's soft memory limit from --memory-limit;
// without it, GOMEMLIMIT (read by the runtime itself) wins, else the
// cgroup's (defaultMemoryLimit). It returns the limit in force (0: none).
func applyMemoryLimit(flag string, getenv func(string) string, log *slog.Logger) int64 {
	limit := defaultMemoryLimit(os.ReadFile)
	switch {
	case flag != "":
		limit, _ = parseSize(flag) // validated with the other flags
	case getenv("GOMEMLIMIT") != "":
		return debug.SetMemoryLimit(-1) // the runtime read it at start
	}
	if limit == 0 {
		debug.SetMemoryLimit(math.MaxInt64)
		return 0
	}
	debug.SetMemoryLimit(limit)
	log.Debug("memory limit set", "bytes", limit)
	return limit
}

// returnMemory gives memory the heap no longer uses back to the system once
// a burst is over: every tick it looks at how much was allocated since the
// last one; when that is little (the burst ended) and the runtime holds
// more than returnAbove bytes beyond the live heap (garbage not yet
// collected, free pages, stacks of ended goroutines), it collects and
// returns them at once
// (debug.FreeOSMemory) instead of leaving it to the runtime's background
// scavenger, which returns only what lies above the heap's goal and so may
// keep a storm's peak for good.
func returnMemory(ctx context.Context, tick <-chan time.Time, log *slog.Logger) {
	samples := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(samples)
	lastAlloc := samples[0].Value.Uint64()
	returned := false // since the last busy tick
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		metrics.Read(samples)
		alloc := samples[0].Value.Uint64()
		held := samples[1].Value.Uint64() - samples[2].Value.Uint64() // the runtime's memory not yet returned
		live := samples[3].Value.Uint64()                             // the heap live at the last collection
		quiet := alloc-lastAlloc < quietAlloc
		lastAlloc = alloc
		if !quiet {
			returned = false
		} else if !returned && held > live+returnAbove {
			returned = true
			t0 := time.Now()
			debug.FreeOSMemory()
			log.Debug("returned memory to the system after a burst", "held_bytes", held, "live_bytes", live, "took", time.Since(t0))
		}
	}
}

const (
	// quietAlloc: less allocated than this in one tick of returnMemory
	// means no burst is going on.
	quietAlloc = 8 << 20
	// returnAbove: memory beyond the live heap worth returning at once
	// (the runtime's own metadata and the goroutines' stacks are a few MiB).
	returnAbove = 16 << 20
)

// returnMemoryEvery is returnMemory's tick.
const returnMemoryEvery = 10 * time.Second
