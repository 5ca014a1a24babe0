package sip

import "fmt"

// safely runs f, recovering a panic: it is logged and counted like a
// handler's, and the process goes on. Every goroutine of the package that is
// not a request handler (handle recovers those) runs its work through it.
func (s *Server) safely(what string, f func()) {
	defer func() {
		if p := recover(); p != nil {
			s.metrics.handlerPanics.Inc()
			s.log.Error("sip background panic", "work", what, "panic", fmt.Sprint(p))
		}
	}()
	f()
}
