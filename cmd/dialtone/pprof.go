package main

import (
	"net/http"
	"net/http/pprof"
)

// pprofMux serves Go's runtime profiles (--debug-addr), for finding what
// limits dialtone under load: go tool pprof http://ADDR/debug/pprof/profile.
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
