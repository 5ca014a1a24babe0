package sip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dialtone-voip/dialtone/sip/media"
	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo/sip"
)

// AnnouncerConfig configures an Announcer. Zero values mean the defaults
// in brackets.
type AnnouncerConfig struct {
	// Announcement is what callers of a disabled extension hear before 486
	// [nil = media.Default(), the built-in "Extension is not recognized.
	// Thank you for calling."]. Announcer.SetAnnouncement replaces it later.
	Announcement *media.Announcement
	// MediaIP is the IP address advertised in SDP answers (c= and o=) for
	// the announcement's RTP ["" = the endpoint's Hostname if it is an IP
	// literal, else the local address the host routes towards the caller].
	// RTP sockets bind to all local addresses, so a public address behind
	// 1:1 NAT works.
	MediaIP string
	// RTPPortMin and RTPPortMax bound the UDP ports used for announcement
	// RTP (even ports only) [10000, 20000].
	RTPPortMin, RTPPortMax int
}

// Announcer plays the announcement to callers of a disabled target (the
// account rules in docs/account-model.md): early media, then 486. The
// Proxy hands it those calls; it is also admin's Announcer
// (SetAnnouncementWAV). It takes no method of its own on the endpoint.
type Announcer struct {
	core    *Server
	cfg     AnnouncerConfig
	ports   *media.PortRange
	ann     atomic.Pointer[media.Announcement]
	mediaIP net.IP // nil: the local address towards each caller
	m       *announcerMetrics
}

// NewAnnouncer builds the announcer on the endpoint s, registering its
// metrics on the endpoint's registerer.
func NewAnnouncer(s *Server, cfg AnnouncerConfig) (*Announcer, error) {
	if cfg.RTPPortMin == 0 {
		cfg.RTPPortMin = 10000
	}
	if cfg.RTPPortMax == 0 {
		cfg.RTPPortMax = 20000
	}
	ports, err := media.NewPorts(cfg.RTPPortMin, cfg.RTPPortMax)
	if err != nil {
		return nil, fmt.Errorf("sip: %w", err)
	}
	a := &Announcer{core: s, cfg: cfg, ports: ports}
	if cfg.MediaIP != "" {
		if a.mediaIP = net.ParseIP(cfg.MediaIP); a.mediaIP == nil || a.mediaIP.IsUnspecified() {
			return nil, fmt.Errorf("sip: MediaIP %q is not a concrete IP address", cfg.MediaIP)
		}
	} else if ip := net.ParseIP(s.cfg.Hostname); ip != nil && !ip.IsUnspecified() {
		a.mediaIP = ip
	}
	if a.m, err = newAnnouncerMetrics(s.reg); err != nil {
		return nil, fmt.Errorf("sip: announcer metrics: %w", err)
	}
	a.SetAnnouncement(cfg.Announcement)
	return a, nil
}

// SetAnnouncement replaces the announcement played to callers of disabled
// targets (nil restores the built-in one). Calls already playing finish
// with the old one. Safe for concurrent use.
func (an *Announcer) SetAnnouncement(a *media.Announcement) {
	if a == nil {
		a = media.Default()
	}
	an.ann.Store(a)
}

// SetAnnouncementWAV loads an operator's WAV (media.LoadWAV: 8 kHz mono
// PCM, μ-law or A-law, or 16-bit PCM at another rate, 0.5 to 60 s) and makes
// it the announcement. A file it refuses leaves the current announcement in
// place; the error wraps media.ErrInvalidWAV and says why. It is admin's
// Announcer.
func (an *Announcer) SetAnnouncementWAV(r io.Reader) error {
	a, err := media.LoadWAV(r)
	if err != nil {
		return err
	}
	an.SetAnnouncement(a)
	an.core.log.Info("announcement replaced", "duration", a.Duration().String())
	return nil
}

// mediaIP is the address advertised in the SDP answer to a caller at remote.
func (an *Announcer) mediaIPFor(remote string) net.IP {
	if an.mediaIP != nil {
		return an.mediaIP
	}
	if ip := localIPFor(remote); ip != nil {
		return ip
	}
	return net.IPv4(127, 0, 0, 1)
}

// play answers an INVITE to a disabled target (docs/design.md; the
// account rules in docs/account-model.md rule 7): 100 Trying, 183 Session Progress with the SDP answer (the
// caller's first G.711 codec, a=sendonly, our media address and a port of
// the range), the announcement as RTP at 20 ms pacing to the address in the
// offer, then 486 Busy Here with the 183's To-tag. A CANCEL stops the RTP at
// once (sipgo answers 487). Without an SDP offer: 486 at once; an offer
// without G.711: 488 with a Warning; no free RTP port: 486 at once. The
// port and every goroutine are released on every path. It returns the
// call record's outcome, status and detail, for the caller to record once
// play returned.
func (an *Announcer) play(req *sip.Request, tx sip.ServerTransaction, callID string) (outcome string, status int, detail string) {
	s := an.core
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var cancelled atomic.Bool
	// Register first (a CANCEL may race the INVITE): false means it already came.
	if !tx.OnCancel(func(*sip.Request) { cancelled.Store(true); stop() }) {
		return store.OutcomeCancelled, 487, "cancelled before the announcement"
	}
	tag := sip.GenerateTagN(16)
	mk := func(code int, reason string) *sip.Response {
		r := s.newResponse(req, code, reason)
		if code > 100 {
			r.To().Params.Add("tag", tag) // one To-tag for 183 and the final response
		}
		return r
	}
	final := func(code int, reason, detail string, hdrs ...sip.Header) (string, int, string) {
		r := mk(code, reason)
		for _, h := range hdrs {
			r.AppendHeader(h)
		}
		if err := s.send(req, tx, r); err != nil && cancelled.Load() {
			return store.OutcomeCancelled, 487, "cancelled during the announcement"
		}
		return store.OutcomeAnnouncedBusy, code, detail
	}
	_ = s.send(req, tx, mk(100, "Trying"))

	body := req.Body()
	if len(strings.TrimSpace(string(body))) == 0 || !isSDP(req) {
		return final(486, "Busy Here", "no SDP offer: busy without media")
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
		return final(488, "Not Acceptable Here", "offer without G.711: "+err.Error(), warn)
	}
	conn, err := an.ports.Allocate(nil)
	if err != nil {
		s.log.Warn("announcement: no RTP port", "err", err)
		return final(486, "Busy Here", "no free RTP port: busy without media")
	}
	defer conn.Close() // releases the port on every path
	ip := an.mediaIPFor(req.Source())
	answer, err := media.BuildAnswer(offer, ip, conn.LocalAddr().(*net.UDPAddr).Port, rand.Uint64()>>1)
	if err != nil {
		s.log.Error("announcement: SDP answer", "err", err)
		return final(486, "Busy Here", "cannot build SDP answer")
	}
	progress := mk(183, "Session Progress")
	progress.AppendHeader(&sip.ContactHeader{Address: s.ourURI(req.Source(), req.Transport(), false)})
	progress.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	progress.SetBody(answer)
	if err := s.send(req, tx, progress); err != nil {
		if cancelled.Load() {
			return store.OutcomeCancelled, 487, "cancelled before the announcement"
		}
		return store.OutcomeFailed, 0, "sending 183 failed"
	}
	an.m.announcements.Inc()

	a := an.ann.Load()
	if offer.RTP != nil {
		st, err := media.Play(ctx, conn.UDPConn, offer.RTP, offer.PayloadType, a)
		an.m.rtpPackets.Add(float64(st.Packets))
		if err != nil && ctx.Err() == nil {
			s.log.Info("announcement: RTP stopped", "call_id", callID, "err", err)
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
		return store.OutcomeCancelled, 487, "cancelled during the announcement"
	}
	return final(486, "Busy Here", "")
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
