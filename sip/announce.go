package sip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dialtone-voip/dialtone/sip/media"
	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo/sip"
)

// announce answers a call to a disabled target (docs/design.md; the
// account rules in docs/account-model.md rule 7): 100 Trying, 183 Session Progress with the SDP answer (the
// caller's first G.711 codec, a=sendonly, our media address and a port of
// the range), the announcement as RTP at 20 ms pacing to the address in the
// offer, then 486 Busy Here with the 183's To-tag. A CANCEL stops the RTP at
// once (sipgo answers 487). Without an SDP offer: 486 at once; an offer
// without G.711: 488 with a Warning; no free RTP port: 486 at once. The
// port and every goroutine are released on every path.
func (s *Server) announce(req *sip.Request, tx sip.ServerTransaction, call *callLog) {
	c := s.calls
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var cancelled atomic.Bool
	// Register first (a CANCEL may race the INVITE): false means it already came.
	if !tx.OnCancel(func(*sip.Request) { cancelled.Store(true); stop() }) {
		call.finish(store.OutcomeCancelled, 487, "cancelled before the announcement")
		return
	}
	tag := sip.GenerateTagN(16)
	mk := func(code int, reason string) *sip.Response {
		r := s.newResponse(req, code, reason)
		if code > 100 {
			r.To().Params.Add("tag", tag) // one To-tag for 183 and the final response
		}
		return r
	}
	final := func(code int, reason, detail string, hdrs ...sip.Header) {
		r := mk(code, reason)
		for _, h := range hdrs {
			r.AppendHeader(h)
		}
		if err := s.respond(req, tx, r); err != nil && cancelled.Load() {
			call.finish(store.OutcomeCancelled, 487, "cancelled during the announcement")
			return
		}
		call.finish(store.OutcomeAnnouncedBusy, code, detail)
	}
	_ = s.respond(req, tx, mk(100, "Trying"))

	body := req.Body()
	if len(strings.TrimSpace(string(body))) == 0 || !isSDP(req) {
		final(486, "Busy Here", "no SDP offer: busy without media")
		return
	}
	offer, err := media.ParseOffer(body)
	if err != nil {
		code, text := 399, "Malformed SDP"
		switch {
		case errors.Is(err, media.ErrNoAudio):
			code, text = 304, "Media type not available"
		case errors.Is(err, media.ErrNoG711):
			code, text = 305, "Incompatible media format: G.711 (PCMU/PCMA) required"
		}
		warn := sip.NewHeader("Warning", fmt.Sprintf("%d %s %q", code, s.advertisedHost(req.Source()), text))
		final(488, "Not Acceptable Here", "offer without G.711: "+err.Error(), warn)
		return
	}
	conn, err := c.ports.Allocate(nil)
	if err != nil {
		s.log.Warn("announcement: no RTP port", "err", err)
		final(486, "Busy Here", "no free RTP port: busy without media")
		return
	}
	defer conn.Close() // releases the port on every path
	ip := s.mediaIP(req.Source())
	answer, err := media.BuildAnswer(offer, ip, conn.LocalAddr().(*net.UDPAddr).Port, rand.Uint64()>>1)
	if err != nil {
		s.log.Error("announcement: SDP answer", "err", err)
		final(486, "Busy Here", "cannot build SDP answer")
		return
	}
	progress := mk(183, "Session Progress")
	progress.AppendHeader(&sip.ContactHeader{Address: s.ourURI(req.Source(), req.Transport(), false)})
	progress.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	progress.SetBody(answer)
	if err := s.respond(req, tx, progress); err != nil {
		if cancelled.Load() {
			call.finish(store.OutcomeCancelled, 487, "cancelled before the announcement")
		} else {
			call.finish(store.OutcomeFailed, 0, "sending 183 failed")
		}
		return
	}
	c.m.announcements.Inc()

	a := c.ann.Load()
	if offer.RTP != nil {
		st, err := media.Play(ctx, conn.UDPConn, offer.RTP, offer.PayloadType, a)
		c.m.rtpPackets.Add(float64(st.Packets))
		if err != nil && ctx.Err() == nil {
			s.log.Info("announcement: RTP stopped", "call_id", call.rec.CallID, "err", err)
		}
	} else {
		// The caller wants no media (hold address, port 0, sendonly): keep
		// the same timing without sending anything.
		t := time.NewTimer(a.Duration())
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	if cancelled.Load() {
		call.finish(store.OutcomeCancelled, 487, "cancelled during the announcement")
		return
	}
	final(486, "Busy Here", "")
}

// isSDP reports whether req's body is SDP (a missing Content-Type with a
// body is taken as SDP, as RFC 3261 §20.15 leaves it to the receiver).
func isSDP(req *sip.Request) bool {
	ct := req.ContentType()
	if ct == nil {
		return true
	}
	v, _, _ := strings.Cut(ct.Value(), ";")
	return strings.EqualFold(strings.TrimSpace(v), "application/sdp")
}
