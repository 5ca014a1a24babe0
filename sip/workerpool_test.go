package sip

import (
	"sync"
	"testing"
	"time"
)

// The fast path's pool accepts MaxInFlight jobs but runs at most
// fastWorkers at once; the rest wait in its queue and all of them run.
func TestWorkerPoolBoundsGoroutines(t *testing.T) {
	const inFlight = fastWorkers + 100
	p := newWorkerPool(inFlight)
	defer p.stop()
	release := make(chan struct{})
	var mu sync.Mutex
	running, most, done := 0, 0, 0
	var wg sync.WaitGroup
	job := func() {
		defer wg.Done()
		mu.Lock()
		running++
		most = max(most, running)
		mu.Unlock()
		<-release
		mu.Lock()
		running--
		done++
		mu.Unlock()
	}
	for i := range inFlight {
		wg.Add(1)
		if !p.submit(job) {
			t.Fatalf("job %d of %d refused", i+1, inFlight)
		}
	}
	if p.submit(func() {}) {
		t.Fatal("a job beyond MaxInFlight was accepted")
	}
	if n := p.n.Load(); n > fastWorkers {
		t.Fatalf("%d workers; want at most %d", n, fastWorkers)
	}
	close(release)
	wg.Wait()
	if most > fastWorkers || done != inFlight {
		t.Fatalf("at most %d ran at once (want ≤ %d), %d of %d done", most, fastWorkers, done, inFlight)
	}
	// Idle again: a new job still runs.
	ran := make(chan struct{})
	deadline := time.After(10 * time.Second)
	for !p.submit(func() { close(ran) }) {
		select {
		case <-deadline:
			t.Fatal("the pool refuses work after draining")
		default:
		}
	}
	<-ran
}

// A pool smaller than fastWorkers (MaxInFlight 2) queues nothing.
func TestWorkerPoolSmall(t *testing.T) {
	p := newWorkerPool(2)
	defer p.stop()
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		if !p.submit(func() { defer wg.Done(); <-release }) {
			t.Fatal("refused below MaxInFlight")
		}
	}
	if p.submit(func() {}) {
		t.Fatal("accepted beyond MaxInFlight")
	}
	close(release)
	wg.Wait()
}
