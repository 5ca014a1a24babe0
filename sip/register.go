package sip

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo/sip"
)

// RegistrarConfig configures a Registrar. Zero values mean the defaults in
// brackets.
type RegistrarConfig struct {
	// MinExpires, MaxExpires and DefaultExpires bound a binding's lifetime in
	// seconds [60, 3600, 3600]. Below MinExpires (and not 0) a REGISTER gets
	// 423 with Min-Expires; above MaxExpires it is clamped and the 200 shows
	// the granted value; without any expires DefaultExpires applies. Keep
	// the endpoint's Config.TCPIdleTimeout above MaxExpires.
	MinExpires, MaxExpires, DefaultExpires int
}

// defaultMaxExpires is RegistrarConfig.MaxExpires's default, in seconds.
const defaultMaxExpires = 3600

// Registrar is the registrar component (RFC 3261 §10.3): it answers
// REGISTER, authenticated with the endpoint's digest (401), and keeps the
// bindings in the store. Its handler only answers, so the endpoint runs it
// on the fast path (fastpath.go) as well as through sipgo.
type Registrar struct {
	core *Server
	cfg  RegistrarConfig
}

// NewRegistrar builds the registrar on the endpoint s and registers it for
// REGISTER. Call it before s serves.
func NewRegistrar(s *Server, cfg RegistrarConfig) (*Registrar, error) {
	if cfg.MinExpires == 0 {
		cfg.MinExpires = 60
	}
	if cfg.MaxExpires == 0 {
		cfg.MaxExpires = defaultMaxExpires
	}
	if cfg.DefaultExpires == 0 {
		cfg.DefaultExpires = 3600
	}
	switch {
	case cfg.MinExpires < 1 || cfg.MaxExpires < cfg.MinExpires:
		return nil, fmt.Errorf("sip: expires bounds %d..%d are invalid", cfg.MinExpires, cfg.MaxExpires)
	case cfg.DefaultExpires < cfg.MinExpires || cfg.DefaultExpires > cfg.MaxExpires:
		return nil, fmt.Errorf("sip: default expires %d is outside %d..%d", cfg.DefaultExpires, cfg.MinExpires, cfg.MaxExpires)
	}
	r := &Registrar{core: s, cfg: cfg}
	if err := s.route(sip.REGISTER, route{answer: r.onRegister, allow: true}); err != nil {
		return nil, err
	}
	return r, nil
}

// onRegister is the registrar (RFC 3261 §10.3). Syntax is checked before
// authentication (a 400 tells nothing about accounts), the expires bounds
// (423) after it, and the store applies the change in one transaction that
// also enforces "disabled users cannot add bindings" and the Call-ID/CSeq
// ordering.
func (r *Registrar) onRegister(req *sip.Request, rs responder) {
	s := r.core
	to := req.To()
	if scheme := strings.ToLower(to.Address.Scheme); scheme != "sip" && scheme != "sips" || to.Address.User == "" || to.Address.Host == "" {
		s.reply(req, rs, 400, "Invalid To URI")
		return
	}
	cs, err := parseContacts(req)
	if err != nil {
		s.reply(req, rs, 400, reason(err))
		return
	}
	hdrExpires := int64(-1)
	if hs := req.GetHeaders("Expires"); len(hs) > 1 {
		s.reply(req, rs, 400, "Duplicate Expires")
		return
	} else if len(hs) == 1 {
		e, err := parseExpires(hs[0].Value())
		if err != nil {
			s.reply(req, rs, 400, "Invalid Expires")
			return
		}
		hdrExpires = int64(e)
	}
	if cs.Wildcard && hdrExpires != 0 {
		// §10.3 step 6: "*" is only valid with Expires: 0.
		s.reply(req, rs, 400, "Wildcard Contact Needs Expires 0")
		return
	}

	id, ok := s.authenticate(req, rs, false)
	if !ok {
		return
	}

	rr := store.RegisterRequest{
		AccountID: id.Account.ID,
		UserID:    id.User.ID,
		CallID:    req.CallID().Value(),
		CSeq:      req.CSeq().SeqNo,
		Source:    req.Source(),
		Transport: strings.ToLower(req.Transport()),
		UserAgent: userAgent(req),
		RemoveAll: cs.Wildcard,
	}
	tooBrief := false
	for _, c := range cs.Contacts {
		e := c.Expires
		if e < 0 {
			e = hdrExpires
		}
		if e < 0 {
			e = int64(r.cfg.DefaultExpires)
		}
		switch {
		case e > 0 && e < int64(r.cfg.MinExpires):
			tooBrief = true
		case e > int64(r.cfg.MaxExpires):
			e = int64(r.cfg.MaxExpires)
		}
		rr.Contacts = append(rr.Contacts, store.ContactUpdate{URI: c.URI, InstanceID: c.InstanceID, Q: c.Q, Expires: int(e)})
	}
	if tooBrief {
		res := s.newResponse(req, 423, "Interval Too Brief")
		res.AppendHeader(sip.NewHeader("Min-Expires", strconv.Itoa(r.cfg.MinExpires)))
		s.send(req, rs, res)
		return
	}

	bindings, err := s.db.Register(rr)
	if err != nil {
		code, reason := registerStatus(err)
		if code == 500 && !errors.Is(err, store.ErrOutOfOrder) {
			s.log.Error("register", "aor", aor(req), "err", err)
		}
		if code == 503 {
			s.log.Debug("register: the store cannot write now", "aor", aor(req), "err", err)
		}
		res := s.newResponse(req, code, reason)
		switch {
		case errors.Is(err, store.ErrNoSpace):
			res.AppendHeader(sip.NewHeader("Retry-After", "30")) // the phone keeps its binding and retries (§20.33)
		case code == 503:
			res.AppendHeader(sip.NewHeader("Retry-After", "5"))
		}
		s.send(req, rs, res)
		return
	}
	now := s.db.Now()
	res := s.newResponse(req, 200, "OK")
	for _, b := range bindings {
		res.AppendHeader(sip.NewHeader("Contact", bindingContact(b, now)))
	}
	res.AppendHeader(sip.NewHeader("Date", now.UTC().Format(http.TimeFormat)))
	s.send(req, rs, res)
}

// bindingContact is a binding as a Contact value of a 200 to REGISTER, with
// the seconds it has left (§10.3 step 8).
func bindingContact(b store.Binding, now time.Time) string {
	left := int64((b.ExpiresAt.Sub(now) + time.Second/2) / time.Second)
	if left < 1 {
		left = 1
	}
	var sb strings.Builder
	sb.WriteString("<")
	sb.WriteString(b.Contact)
	sb.WriteString(">;expires=")
	sb.WriteString(strconv.FormatInt(left, 10))
	if b.Q != "" {
		sb.WriteString(";q=")
		sb.WriteString(b.Q)
	}
	if b.InstanceID != "" {
		sb.WriteString(`;+sip.instance="`)
		sb.WriteString(b.InstanceID)
		sb.WriteString(`"`)
	}
	return sb.String()
}

// registerStatus maps a store.Register error to a SIP status (the SIP twin
// of admin's writeError).
func registerStatus(err error) (int, string) {
	switch {
	case errors.Is(err, store.ErrDisabled):
		return 403, "Forbidden"
	case errors.Is(err, store.ErrNotFound):
		// The user was deleted between the digest check and the write.
		return 404, "Not Found"
	case errors.Is(err, store.ErrNoSpace):
		return 500, "Insufficient Storage" // with Retry-After: nothing was written
	case errors.Is(err, store.ErrNoLease), errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrConflict):
		// Several nodes: etcd did not answer, this node has no lease, or
		// other nodes' writes won every attempt. Nothing was written; the
		// phone keeps its binding and retries (with Retry-After, §21.5.4).
		return 503, "Service Unavailable"
	case errors.Is(err, store.ErrOutOfOrder):
		// §10.3 step 7 leaves the status open; 500 is what RFC 3261 uses
		// for an out-of-order CSeq elsewhere (§12.2.2).
		return 500, "Out of Order"
	}
	return 500, "Server Internal Error"
}

func userAgent(req *sip.Request) string {
	h := req.GetHeader("User-Agent")
	if h == nil {
		return ""
	}
	ua := strings.TrimSpace(h.Value())
	if len(ua) > maxUserAgentLen {
		ua = ua[:maxUserAgentLen]
	}
	return strings.ToValidUTF8(ua, "")
}

func aor(req *sip.Request) string {
	if to := req.To(); to != nil {
		return unescapeUser(to.Address.User) + "@" + strings.ToLower(to.Address.Host)
	}
	return ""
}
