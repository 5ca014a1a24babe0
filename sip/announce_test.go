package sip

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/sip/media"
	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/sdp/v3"
)

// awaitProgress reads responses until the 183 and returns it.
func awaitProgress(t *testing.T, cl *call) *sip.Response {
	t.Helper()
	for {
		r := cl.next(within)
		if r == nil {
			t.Fatal("transaction ended before 183")
		}
		if r.StatusCode == 183 {
			return r
		}
		if r.StatusCode >= 200 {
			t.Fatalf("final %d %s before 183", r.StatusCode, r.Reason)
		}
	}
}

// answerSDP parses the SDP of a 183 and returns its single audio stream's
// port, formats and attributes.
func answerSDP(t *testing.T, r *sip.Response) (int, []string, map[string]string) {
	t.Helper()
	if ct := r.GetHeader("Content-Type"); ct == nil || ct.Value() != "application/sdp" {
		t.Fatalf("183 Content-Type = %v, want application/sdp", ct)
	}
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(r.Body()); err != nil {
		t.Fatalf("183 SDP: %v\n%s", err, r.Body())
	}
	if len(sd.MediaDescriptions) != 1 {
		t.Fatalf("183 SDP has %d streams:\n%s", len(sd.MediaDescriptions), r.Body())
	}
	md := sd.MediaDescriptions[0]
	attrs := map[string]string{}
	for _, a := range md.Attributes {
		attrs[a.Key] = a.Value
	}
	return md.MediaName.Port.Value, md.MediaName.Formats, attrs
}

func TestAnnouncementToDisabledExtension(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	callee, _ := e.addUser("1002")
	e.disable(callee)
	sink := newRTPSink(t)
	c := e.caller(nil, "UDP", "1001", e.password)

	cl := c.start("1002", offer(sink.port(), "0 8 101"), false)
	prog := awaitProgress(t, cl)
	port, formats, attrs := answerSDP(t, prog)
	if len(formats) != 1 || formats[0] != "0" {
		t.Errorf("answer formats = %v, want [0] (the caller's first G.711)", formats)
	}
	if _, ok := attrs["sendonly"]; !ok {
		t.Errorf("answer lacks a=sendonly: %v", attrs)
	}
	if port < 30000 || port > 39999 || port%2 != 0 {
		t.Errorf("answer port %d, want an even port of 30000-39999", port)
	}
	if prog.Contact() == nil {
		t.Error("183 without Contact")
	}
	tag, _ := prog.To().Params.Get("tag")
	if tag == "" {
		t.Error("183 without To-tag")
	}

	final := cl.waitFinal(within)
	if final.StatusCode != 486 {
		t.Fatalf("final = %d %s, want 486", final.StatusCode, final.Reason)
	}
	if ftag, _ := final.To().Params.Get("tag"); ftag != tag {
		t.Errorf("486 To-tag %q, 183 To-tag %q: want one", ftag, tag)
	}

	pkts := sink.packets()
	if len(pkts) < 100 {
		t.Fatalf("got %d RTP packets, want at least 100 (2 s)", len(pkts))
	}
	// The pace: the least-squares slope of arrival time over packet index,
	// not first-to-last, so that the sink's reader being held up for a
	// moment on a loaded machine (a few packets read late, at once) does
	// not count as the sender's doing.
	if rate := packetRate(pkts); rate < 45 || rate > 55 {
		t.Errorf("RTP rate %.1f packets/s over %d packets, want ~50", rate, len(pkts))
	}
	var audio []byte
	first := pkts[0].pkt
	if !first.Marker {
		t.Error("first RTP packet without marker bit")
	}
	for i, p := range pkts {
		h := p.pkt.Header
		if h.PayloadType != 0 || h.SSRC != first.SSRC ||
			h.SequenceNumber != first.SequenceNumber+uint16(i) || h.Timestamp != first.Timestamp+uint32(160*i) {
			t.Fatalf("packet %d: pt %d ssrc %x seq %d ts %d; first: ssrc %x seq %d ts %d", i, h.PayloadType, h.SSRC,
				h.SequenceNumber, h.Timestamp, first.SSRC, first.SequenceNumber, first.Timestamp)
		}
		if i > 0 && h.Marker {
			t.Errorf("marker on packet %d", i)
		}
		if p.src.Port != port {
			t.Fatalf("RTP from port %d, SDP says %d (symmetric RTP)", p.src.Port, port)
		}
		audio = append(audio, p.pkt.Payload...)
	}
	if rms := media.RMS(media.DecodeULaw(audio)); rms < 300 {
		t.Errorf("decoded announcement RMS = %.0f, want speech (not silence)", rms)
	}

	rec := e.waitRecord(cl.callID)
	if rec.Outcome != store.OutcomeAnnouncedBusy || rec.Status != 486 || rec.To != "1002" || rec.ToName != "User 1002" ||
		rec.From != "1001" || rec.FromName != "User 1001" || rec.Duration < 2*time.Second {
		t.Errorf("call record = %+v", rec)
	}
	if got := e.metric("dialtone_sip_announcements_played_total", ""); got != 1 {
		t.Errorf("announcements_played_total = %v, want 1", got)
	}
	if got := e.metric("dialtone_sip_rtp_packets_sent_total", ""); int(got) != len(pkts) {
		t.Errorf("rtp_packets_sent_total = %v, received %d", got, len(pkts))
	}
	if got := e.metric("dialtone_sip_invites_total", store.OutcomeAnnouncedBusy); got != 1 {
		t.Errorf("invites_total{announced_busy} = %v, want 1", got)
	}
}

// TestAnnouncementCancel: a CANCEL during the announcement gets 487 and
// stops the RTP at once. What "at once" means without a stopwatch: the
// CANCEL callback cancels the sender's context before sipgo sends the 487
// (announce.go), and media.Play checks its context before every packet, so
// at most one packet (the one being written) may leave after the caller
// has the 487. The test counts the packets the sink read when the 487 was
// in (a mark drains the sink), waits until the server closed the call's RTP
// socket (its port range's own count; nothing can leave a closed socket),
// drains the sink again and allows that one packet.
func TestAnnouncementCancel(t *testing.T) {
	t.Parallel()
	ann := longAnnouncement(t)
	e := newCallEnv(t, withAnnouncer(AnnouncerConfig{Announcement: ann}))
	callee, _ := e.addUser("1002")
	e.disable(callee)
	sink := newRTPSink(t)
	c := e.caller(nil, "TCP", "1001", e.password)

	cl := c.start("1002", offer(sink.port(), "0"), false)
	awaitProgress(t, cl)
	sink.waitPackets(t, 10)
	if res := cl.cancel(); res.StatusCode != 200 {
		t.Fatalf("CANCEL → %d, want 200", res.StatusCode)
	}
	if final := cl.waitFinal(within); final.StatusCode != 487 {
		t.Fatalf("final = %d, want 487", final.StatusCode)
	}
	atFinal := sink.mark(t)
	rec := e.waitRecord(cl.callID)
	if rec.Outcome != store.OutcomeCancelled || rec.Status != 487 {
		t.Errorf("record = %+v, want cancelled 487", rec)
	}
	ports := e.ann.ports
	waitFor(t, "the call's RTP socket closed", func() bool { return ports.InUse() == 0 })
	total := sink.mark(t)
	if late := total - atFinal; late > 1 {
		t.Errorf("%d RTP packets after the 487 (%d before it), want at most the one being sent", late, atFinal)
	}
	if whole := int(ann.Duration() / (20 * time.Millisecond)); total >= whole {
		t.Errorf("%d packets of %d: the announcement was not cut short", total, whole)
	}
	// Every packet the server counts as sent arrived, and no other.
	if got := e.metric("dialtone_sip_rtp_packets_sent_total", ""); int(got) != total {
		t.Errorf("rtp_packets_sent_total = %v, the sink read %d", got, total)
	}
}

// TestStrayACKNotAnswered: an ACK that matches no transaction (the ACK for
// a non-2xx final response arriving after its INVITE transaction ended, or
// the one for a 407) reaches dialtone's ACK handler and is not answered
// (ACKs never are; answered like other requests without a handler, it
// would get 405, and the test fails then). Over one TCP
// connection: OPTIONS, the stray ACK, then, once the ACK was handled and no
// handler is running (the server's own counters; a response is written
// before its handler returns), another OPTIONS. The next message on the
// stream must be that OPTIONS' 200: anything sent for the ACK came before.
func TestStrayACKNotAnswered(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	s := dialStream(t, e.tcpAddr)
	options := func() []byte { return rawMsg("TCP", optionsLines("Content-Length: 0")...) }
	wantStatus(t, s.exchange(options()), 200, "")
	ack := rawMsg("TCP", "ACK sip:1002@example.test SIP/2.0", "Via: SIP/2.0/TCP 127.0.0.1:5999;branch={branch};rport",
		"Max-Forwards: 70", "From: <sip:1001@example.test>;tag=fd1", "To: <sip:1002@example.test>;tag=gone",
		"Call-ID: {callid}", "CSeq: 1 ACK", "Content-Length: 0", "", "")
	if _, err := s.c.Write(ack); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ACK handled", func() bool {
		return e.metric("dialtone_sip_requests_total", "ACK") == 1 && e.metric("dialtone_sip_in_flight_requests", "") == 0
	})
	res := s.exchange(options())
	if res == nil || res.CSeq() == nil || res.CSeq().MethodName != sip.OPTIONS || res.StatusCode != 200 {
		t.Fatalf("after a stray ACK, got %v; want only the OPTIONS' 200", res)
	}
}

func TestAnnouncementOffers(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t, withAnnouncer(AnnouncerConfig{Announcement: shortAnnouncement(t)}))
	callee, _ := e.addUser("1002")
	e.disable(callee)

	for _, transport := range []string{"UDP", "TCP"} {
		c := e.caller(nil, transport, "1001", e.password)
		t.Run(transport+"/PCMA only", func(t *testing.T) {
			sink := newRTPSink(t)
			cl := c.start("1002", offer(sink.port(), "8 101"), false)
			_, formats, _ := answerSDP(t, awaitProgress(t, cl))
			if len(formats) != 1 || formats[0] != "8" {
				t.Errorf("answer formats = %v, want [8]", formats)
			}
			if f := cl.waitFinal(within); f.StatusCode != 486 {
				t.Fatalf("final %d, want 486", f.StatusCode)
			}
			pkts := sink.packets()
			if len(pkts) < 20 {
				t.Fatalf("%d packets for a 0.5 s announcement", len(pkts))
			}
			var audio []byte
			for _, p := range pkts {
				if p.pkt.PayloadType != 8 {
					t.Fatalf("payload type %d, want 8", p.pkt.PayloadType)
				}
				audio = append(audio, p.pkt.Payload...)
			}
			if rms := media.RMS(media.DecodeALaw(audio)); rms < 1000 {
				t.Errorf("A-law audio RMS %.0f, want the tone", rms)
			}
		})
		t.Run(transport+"/no SDP", func(t *testing.T) {
			cl := c.start("1002", nil, false)
			for {
				r := cl.next(within)
				if r.StatusCode == 183 {
					t.Fatal("183 for an INVITE without SDP")
				}
				if r.StatusCode >= 200 {
					if r.StatusCode != 486 {
						t.Fatalf("final %d, want 486", r.StatusCode)
					}
					break
				}
			}
			if rec := e.waitRecord(cl.callID); rec.Outcome != store.OutcomeAnnouncedBusy || rec.Status != 486 {
				t.Errorf("record %+v", rec)
			}
		})
		t.Run(transport+"/opus only", func(t *testing.T) {
			sink := newRTPSink(t)
			cl := c.start("1002", offer(sink.port(), "111"), false)
			f := cl.waitFinal(within)
			if f.StatusCode != 488 {
				t.Fatalf("final %d, want 488", f.StatusCode)
			}
			if w := f.GetHeader("Warning"); w == nil || !strings.HasPrefix(w.Value(), "305 ") {
				t.Errorf("Warning = %v, want 305 …", w)
			}
			if n := len(sink.packets()); n != 0 {
				t.Errorf("%d RTP packets for a rejected offer", n)
			}
		})
	}
}

// packetRate is the rate (packets per second) of the least-squares line
// through the packets' arrival times.
func packetRate(pkts []rtpRecv) float64 {
	n := float64(len(pkts))
	var sx, sy, sxx, sxy float64
	for i, p := range pkts {
		x, y := float64(i), p.at.Sub(pkts[0].at).Seconds()
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
	}
	slope := (n*sxy - sx*sy) / (n*sxx - sx*sx) // seconds per packet
	return 1 / slope
}

// waitFor waits until cond holds. cond reads state the code under test owns
// (its counters, its store, its port range); nothing signals its changes,
// so it is polled. The deadline bounds a failing test only: a passing test
// waits just as long as the code takes, so it is generous for a loaded
// machine.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	const bound = 20 * time.Second
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting: %s", bound, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSetAnnouncementWAV(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	if got := e.ann.ann.Load(); got != media.Default() {
		t.Fatal("the built-in announcement is not the default")
	}
	if err := e.ann.SetAnnouncementWAV(strings.NewReader("not a wav")); !errors.Is(err, media.ErrInvalidWAV) {
		t.Errorf("bad WAV: %v, want ErrInvalidWAV", err)
	}
	if got := e.ann.ann.Load(); got != media.Default() {
		t.Error("a refused WAV replaced the announcement")
	}
	if err := e.ann.SetAnnouncementWAV(bytes.NewReader(toneWAV(time.Second))); err != nil {
		t.Fatal(err)
	}
	if d := e.ann.ann.Load().Duration(); d != time.Second {
		t.Errorf("announcement lasts %v, want the 1 s WAV", d)
	}
	e.ann.SetAnnouncement(nil)
	if got := e.ann.ann.Load(); got != media.Default() {
		t.Error("SetAnnouncement(nil) did not restore the built-in announcement")
	}
}
