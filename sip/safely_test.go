package sip

import "testing"

// A panic in background work (a fork's branch reader, a check-sync NOTIFY)
// is recovered and counted; the server keeps answering.
func TestSafelyRecoversBackgroundPanic(t *testing.T) {
	e := newEnv(t, Config{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.srv.safely("test", func() { panic("boom") })
	}()
	<-done
	if got := counterValue(t, e.srv.metrics.handlerPanics); got != 1 {
		t.Fatalf("handler panics = %v, want 1", got)
	}
	if res := e.uac("UDP", "1001", e.password).register("MD5"); res.StatusCode != 200 {
		t.Fatalf("REGISTER after a recovered background panic = %d, want 200", res.StatusCode)
	}
}
