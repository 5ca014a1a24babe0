package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
)

type received struct {
	pkt  rtp.Packet
	at   time.Time
	from *net.UDPAddr
}

// listen opens a receiving socket on 127.0.0.1 and collects packets until it has want of them or
// nothing arrived for idle. Wait for the result with the returned function.
func listen(t *testing.T, want int, idle time.Duration) (*net.UDPAddr, func() []received) {
	t.Helper()
	rc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: loopback})
	if err != nil {
		t.Fatal(err)
	}
	_ = rc.SetReadBuffer(1 << 20) // a starved reader must not lose packets
	done := make(chan []received, 1)
	go func() {
		defer rc.Close()
		var got []received
		buf := make([]byte, 1500)
		for len(got) < want {
			rc.SetReadDeadline(time.Now().Add(idle))
			n, from, err := rc.ReadFromUDP(buf)
			if err != nil {
				break
			}
			var p rtp.Packet
			if err := p.Unmarshal(append([]byte(nil), buf[:n]...)); err != nil {
				t.Errorf("bad RTP packet: %v", err)
				continue
			}
			got = append(got, received{p, time.Now(), from})
		}
		done <- got
	}()
	return rc.LocalAddr().(*net.UDPAddr), func() []received { return <-done }
}

func sender(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: loopback})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// clip is an announcement of d made through LoadWAV: a 440 Hz tone.
func clip(t *testing.T, d time.Duration) *Announcement {
	t.Helper()
	a, err := LoadWAV(bytes.NewReader(wavFile(wavePCM, 1, 8000, 16, pcmBytes(sine(440, 12000, 8000, d)))))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func within(got, want time.Duration, tolerance float64) bool {
	r := float64(got) / float64(want)
	return r >= 1-tolerance && r <= 1+tolerance
}

// checkStream verifies the RTP rules on a complete received stream of a played with pt. Pacing
// problems are returned, not reported, so that the caller can retry on an overloaded machine.
func checkStream(t *testing.T, got []received, a *Announcement, pt uint8, src *net.UDPConn) error {
	t.Helper()
	audio := a.Payload(pt)
	want := (len(audio) + 159) / 160
	if len(got) != want {
		t.Fatalf("received %d packets, want %d", len(got), want)
	}
	first := got[0].pkt.Header
	var payload []byte
	for i, r := range got {
		h := r.pkt.Header
		if h.Version != 2 || h.PayloadType != pt || h.SSRC != first.SSRC || h.Padding || h.Extension || len(h.CSRC) != 0 {
			t.Fatalf("packet %d: header %+v", i, h)
		}
		if h.SequenceNumber != first.SequenceNumber+uint16(i) {
			t.Fatalf("packet %d: seq %d, want %d", i, h.SequenceNumber, first.SequenceNumber+uint16(i))
		}
		if h.Timestamp != first.Timestamp+uint32(160*i) {
			t.Fatalf("packet %d: timestamp %d, want %d", i, h.Timestamp, first.Timestamp+uint32(160*i))
		}
		if h.Marker != (i == 0) {
			t.Fatalf("packet %d: marker %v", i, h.Marker)
		}
		if len(r.pkt.Payload) != 160 {
			t.Fatalf("packet %d: %d payload bytes", i, len(r.pkt.Payload))
		}
		if !r.from.IP.Equal(loopback) || r.from.Port != port(src) {
			t.Fatalf("packet %d from %v, want the sending socket %v (symmetric RTP)", i, r.from, src.LocalAddr())
		}
		payload = append(payload, r.pkt.Payload...)
	}
	if !bytes.Equal(payload[:len(audio)], audio) {
		t.Error("payloads differ from the announcement")
	}
	silence := byte(ulawSilence)
	if pt == PayloadPCMA {
		silence = alawSilence
	}
	for i, b := range payload[len(audio):] {
		if b != silence {
			t.Fatalf("padding byte %d = %#02x, want silence %#02x", i, b, silence)
		}
	}
	var pcm []int16
	if pt == PayloadPCMU {
		pcm = DecodeULaw(payload)
	} else {
		pcm = DecodeALaw(payload)
	}
	if rms := RMS(pcm); rms < 1000 {
		t.Errorf("received audio RMS %.0f: silence", rms)
	}
	// Pacing: 20 ms apart on average, first to last.
	if span, exp := got[len(got)-1].at.Sub(got[0].at), time.Duration(len(got)-1)*20*time.Millisecond; !within(span, exp, 0.25) {
		return fmt.Errorf("first to last packet %v, want %v ±25%% (mean inter-arrival %v)", span, exp, span/time.Duration(len(got)-1))
	}
	return nil
}

// timing runs a timing-sensitive check up to 3 times: a loaded machine (other tests, -race) can
// stall a process for longer than the tolerance. Correctness failures inside f are fatal at once.
func timing(t *testing.T, f func() error) {
	t.Helper()
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if err = f(); err == nil {
			return
		}
		t.Logf("attempt %d: %v", attempt, err)
	}
	t.Error(err)
}

func TestPlayClip(t *testing.T) {
	t.Parallel()
	a := clip(t, 1010*time.Millisecond) // 8080 samples: 50 full packets and a half one
	timing(t, func() error {
		src := sender(t)
		_, bystanderGot := listen(t, 1, 1500*time.Millisecond)
		dst, wait := listen(t, 51, 3*time.Second)
		st, err := Play(context.Background(), src, dst, PayloadPCMU, a)
		if err != nil {
			t.Fatal(err)
		}
		if st.Packets != 51 || st.Bytes != 51*160 {
			t.Fatalf("Stats %+v, want 51 packets, %d bytes", st, 51*160)
		}
		if got := bystanderGot(); len(got) != 0 {
			t.Fatalf("a bystander socket received %d packets", len(got))
		}
		if err := checkStream(t, wait(), a, PayloadPCMU, src); err != nil {
			return err
		}
		if !within(st.Duration, 51*20*time.Millisecond, 0.25) {
			return fmt.Errorf("Stats.Duration %v, want 1.02 s ±25%%", st.Duration)
		}
		return nil
	})
}

func TestPlayDefaultALaw(t *testing.T) {
	t.Parallel()
	a := Default()
	want := (len(a.alaw) + 159) / 160
	timing(t, func() error {
		src := sender(t)
		dst, wait := listen(t, want, 3*time.Second)
		st, err := Play(context.Background(), src, dst, PayloadPCMA, a)
		if err != nil {
			t.Fatal(err)
		}
		if st.Packets != want {
			t.Fatalf("Stats %+v, want %d packets", st, want)
		}
		if err := checkStream(t, wait(), a, PayloadPCMA, src); err != nil {
			return err
		}
		if !within(st.Duration, a.Duration(), 0.25) {
			return fmt.Errorf("Stats.Duration %v, want about %v", st.Duration, a.Duration())
		}
		return nil
	})
}

// TestPlayCancel: Play checks its context before every packet, so once
// cancel has returned at most one packet (the one being written) may still
// leave, and Play returns context.Canceled with Stats counting exactly what
// was sent. No stopwatch: right after cancel a mark datagram is sent to the
// receiving socket from another one. A socket's queue is first in, first
// out, and on loopback a datagram is queued by the sending system call, so
// every packet read after the mark was sent after cancel.
func TestPlayCancel(t *testing.T) {
	t.Parallel()
	a := Default()
	src := sender(t)
	rc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		st  Stats
		err error
	}
	res := make(chan result, 1)
	go func() {
		st, err := Play(ctx, src, rc.LocalAddr().(*net.UDPAddr), PayloadPCMU, a)
		res <- result{st, err}
	}()
	const mark = "mark"
	buf := make([]byte, 1500)
	// read reads one datagram (20 s at most: a bound for a failing test).
	read := func() string {
		rc.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, _, err := rc.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("reading: %v", err)
		}
		return string(buf[:n])
	}
	for range 10 { // the stream is running
		if read() == mark {
			t.Fatal("mark before 10 packets")
		}
	}
	cancel()
	m, err := net.DialUDP("udp4", nil, rc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Write([]byte(mark)); err != nil {
		t.Fatal(err)
	}
	before := 10
	for read() != mark {
		before++
	}
	var r result
	select {
	case r = <-res:
	case <-time.After(20 * time.Second):
		t.Fatal("Play did not return after cancel")
	}
	if !errors.Is(r.err, context.Canceled) {
		t.Errorf("Play after cancel: %v, want context.Canceled", r.err)
	}
	if late := r.st.Packets - before; late < 0 || late > 1 {
		t.Errorf("Play sent %d packets, %d of them before cancel: want at most one after", r.st.Packets, before)
	}
	// What Play counted arrived, nothing more: the sender socket is idle now
	// (Play returned), so anything it sent is queued; a second mark drains it.
	if _, err := m.Write([]byte(mark)); err != nil {
		t.Fatal(err)
	}
	after := 0
	for read() != mark {
		after++
	}
	if before+after != r.st.Packets {
		t.Errorf("received %d packets in all, Play sent %d", before+after, r.st.Packets)
	}
	if r.st.Packets >= len(a.ulaw)/packetSamples {
		t.Errorf("%d packets: the whole announcement was sent", r.st.Packets)
	}
}

func TestPlayNoLeaks(t *testing.T) {
	// Not parallel: it counts goroutines.
	base := runtime.NumGoroutine()
	p := freeRange(t, 8)
	a := fromULaw(bytes.Repeat([]byte{0x80, 0x00}, 8000)) // 2 s, never played to the end
	dst, err := net.ListenUDP("udp4", &net.UDPAddr{IP: loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close() // nobody reads: packets just queue
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []error
	sem := make(chan struct{}, p.Size()/2) // at most half the range in use: Allocate scans once

	for i := range 100 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conn, err := p.Allocate(loopback)
			if err != nil {
				mu.Lock()
				failures = append(failures, err)
				mu.Unlock()
				return
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%4)*15*time.Millisecond)
			defer cancel()
			if _, err := Play(ctx, conn.UDPConn, dst.LocalAddr().(*net.UDPAddr), PayloadPCMU, a); !errors.Is(err, context.DeadlineExceeded) {
				mu.Lock()
				failures = append(failures, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d runs failed, first: %v", len(failures), failures[0])
	}
	// Goroutines: wait for exiting ones to be gone (bounded), then compare.
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		runtime.Gosched()
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		t.Errorf("%d goroutines after 100 cancelled plays, %d before", n, base)
	}
	// Every port is free again.
	if n := p.InUse(); n != 0 {
		t.Errorf("%d ports still in use after the plays", n)
	}
	conns, err := allocateAll(p)
	if err != nil {
		t.Fatalf("whole range not free after the plays: %v", err)
	}
	closeAll(conns)
}

func TestPlayErrors(t *testing.T) {
	a := fromULaw(make([]byte, 320))
	src := sender(t)
	dst := &net.UDPAddr{IP: loopback, Port: 9}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		dst  *net.UDPAddr
		pt   uint8
		a    *Announcement
		want error
	}{
		{"nil dst", nil, PayloadPCMU, a, ErrNoDestination},
		{"unspecified dst", &net.UDPAddr{IP: net.IPv4zero, Port: 4000}, PayloadPCMU, a, ErrNoDestination},
		{"port 0", &net.UDPAddr{IP: loopback}, PayloadPCMU, a, ErrNoDestination},
		{"G.722", dst, 9, a, nil},
		{"nil announcement", dst, PayloadPCMU, nil, nil},
	} {
		st, err := Play(ctx, src, tc.dst, tc.pt, tc.a)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || st.Packets != 0 {
			t.Errorf("%s: Play = %+v, %v; want error %v", tc.name, st, err, tc.want)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if st, err := Play(cancelled, src, dst, PayloadPCMU, a); !errors.Is(err, context.Canceled) || st.Packets != 0 {
		t.Errorf("Play with a cancelled ctx = %+v, %v", st, err)
	}
}

func TestPlayDoesNotAllocatePerPacket(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	src := sender(t)
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	dst := sink.LocalAddr().(*net.UDPAddr)
	allocs := func(packets int) float64 {
		a := fromULaw(make([]byte, packets*160-80))
		return testing.AllocsPerRun(1, func() {
			if _, err := Play(context.Background(), src, dst, PayloadPCMU, a); err != nil {
				t.Fatal(err)
			}
		})
	}
	short, long := allocs(3), allocs(20)
	t.Logf("allocations: %v for 3 packets, %v for 20", short, long)
	if long > short {
		t.Errorf("Play allocates per packet: %v allocations for 3 packets, %v for 20", short, long)
	}
}
