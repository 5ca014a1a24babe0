package main

import (
	"context"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"testing"
	"time"
)

// The default follows a container's limit: 90 % of the cgroup's.
func TestDefaultMemoryLimit(t *testing.T) {
	files := func(m map[string]string) func(string) ([]byte, error) {
		return func(name string) ([]byte, error) {
			if v, ok := m[name]; ok {
				return []byte(v), nil
			}
			return nil, os.ErrNotExist
		}
	}
	for _, c := range []struct {
		files map[string]string
		want  int64
	}{
		{map[string]string{}, 0},
		{map[string]string{"/sys/fs/cgroup/memory.max": "max\n"}, 0},
		{map[string]string{"/sys/fs/cgroup/memory.max": "1073741824\n"}, 1073741824 / 10 * 9},
		{map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0},
		{map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912"}, 536870912 / 10 * 9},
	} {
		if got := defaultMemoryLimit(files(c.files)); got != c.want {
			t.Errorf("defaultMemoryLimit(%v) = %d; want %d", c.files, got, c.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "off": 0, "96MiB": 96 << 20, "1GiB": 1 << 30, "512 KiB": 512 << 10, "1000": 1000, "7B": 7} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1MiB", "12MB", "lots", "99999999999TiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

// --memory-limit reaches the runtime: the flag, 0 for none, GOMEMLIMIT
// when the flag is absent, the default otherwise; a bad value is refused
// at start.
func TestMemoryLimitFlag(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	noEnv := func(string) string { return "" }
	parse := func(args ...string) config {
		t.Helper()
		cfg, err := parseConfig(args, noEnv, io.Discard)
		if err != nil {
			t.Fatalf("parseConfig(%q) = %v", args, err)
		}
		return cfg
	}

	if got := applyMemoryLimit(parse("--memory-limit", "200MiB").MemoryLimit, noEnv, log); got != 200<<20 || debug.SetMemoryLimit(-1) != 200<<20 {
		t.Errorf("--memory-limit 200MiB: limit %d, runtime %d", got, debug.SetMemoryLimit(-1))
	}
	if got := applyMemoryLimit(parse("--memory-limit", "0").MemoryLimit, noEnv, log); got != 0 || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Errorf("--memory-limit 0: limit %d, runtime %d; want none", got, debug.SetMemoryLimit(-1))
	}
	def := defaultMemoryLimit(os.ReadFile)
	if got := applyMemoryLimit(parse().MemoryLimit, noEnv, log); got != def || (def > 0 && debug.SetMemoryLimit(-1) != def) {
		t.Errorf("default: limit %d, runtime %d; want %d", got, debug.SetMemoryLimit(-1), def)
	}
	// GOMEMLIMIT is read by the runtime at start; the flag's absence leaves it.
	debug.SetMemoryLimit(300 << 20)
	env := func(k string) string {
		if k == "GOMEMLIMIT" {
			return "300MiB"
		}
		return ""
	}
	if got := applyMemoryLimit(parse().MemoryLimit, env, log); got != 300<<20 || debug.SetMemoryLimit(-1) != 300<<20 {
		t.Errorf("GOMEMLIMIT=300MiB: limit %d, runtime %d", got, debug.SetMemoryLimit(-1))
	}
	// DIALTONE_MEMORY_LIMIT like every flag.
	env2 := func(k string) string {
		if k == "DIALTONE_MEMORY_LIMIT" {
			return "64MiB"
		}
		return ""
	}
	cfg, err := parseConfig(nil, env2, io.Discard)
	if err != nil || applyMemoryLimit(cfg.MemoryLimit, env2, log) != 64<<20 {
		t.Errorf("DIALTONE_MEMORY_LIMIT=64MiB: %q, %v", cfg.MemoryLimit, err)
	}
	if _, err := parseConfig([]string{"--memory-limit", "12MB"}, noEnv, io.Discard); err == nil || !strings.Contains(err.Error(), "--memory-limit") {
		t.Errorf("--memory-limit 12MB: %v; want a refusal naming the flag", err)
	}
}

// After a burst the memory the runtime holds beyond the live heap goes
// back to the system at the first quiet tick, not whenever the scavenger
// gets to it.
func TestReturnMemoryAfterBurst(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // no collection but ours
	held := func() uint64 {
		s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64() - s[1].Value.Uint64()
	}
	runtime.GC()
	debug.FreeOSMemory()
	base := held()

	tick := make(chan time.Time)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		returnMemory(ctx, tick, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	// The burst: 128 MiB allocated and dropped, with the collector off.
	var sink [][]byte
	for range 128 {
		sink = append(sink, make([]byte, 1<<20))
	}
	runtime.KeepAlive(sink)
	sink = nil
	if h := held(); h < base+100<<20 {
		t.Fatalf("the burst holds %d MiB more; the test cannot tell", (h-base)>>20)
	}
	tick <- time.Now() // busy: allocations since the start
	if h := held(); h < base+100<<20 {
		t.Fatalf("memory returned during the burst (%d MiB more than before)", (h-base)>>20)
	}
	tick <- time.Now() // quiet
	tick <- time.Now() // the first tick's work is done once the second is taken
	cancel()
	<-done
	if h := held(); h > base+32<<20 {
		t.Fatalf("after the burst the runtime still holds %d MiB more than before", (h-base)>>20)
	}
}
