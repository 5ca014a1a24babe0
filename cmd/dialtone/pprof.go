package main

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"runtime/metrics"
	"strings"
)

// pprofMux serves Go's runtime profiles (--debug-addr), for finding what
// limits dialtone under load: go tool pprof http://ADDR/debug/pprof/profile,
// go tool pprof -sample_index=inuse_space http://ADDR/debug/pprof/heap.
// /debug/memory lists the runtime's memory classes (runtime/metrics), to
// compare the Go heap with the process's resident memory.
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/memory", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		writeMemoryClasses(w)
	})
	return mux
}

// writeMemoryClasses writes one "name value" line per runtime/metrics
// sample about memory and the garbage collector.
func writeMemoryClasses(w interface{ Write([]byte) (int, error) }) {
	var samples []metrics.Sample
	for _, d := range metrics.All() {
		if d.Kind == metrics.KindUint64 && (strings.HasPrefix(d.Name, "/memory/") || strings.HasPrefix(d.Name, "/gc/") || strings.HasPrefix(d.Name, "/sched/goroutines")) {
			samples = append(samples, metrics.Sample{Name: d.Name})
		}
	}
	metrics.Read(samples)
	for _, s := range samples {
		fmt.Fprintf(w, "%s %d\n", s.Name, s.Value.Uint64())
	}
}
