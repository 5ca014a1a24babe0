package sip

import (
	"errors"
	"strings"

	"github.com/dialtone-voip/dialtone/internal/digest"
	"github.com/dialtone-voip/dialtone/internal/guard"
	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo/sip"
)

// Reasons an authentication failed. They appear in metrics and logs only:
// from outside, every failure is the same challenge.
const (
	authUnknownUser = "unknown_user"
	authBadPassword = "bad_password"
	authStale       = "stale"
	authReplay      = "replay"
	authBadNonce    = "bad_nonce"
	authBadRealm    = "bad_realm"
	authMalformed   = "malformed"
	authWrongUser   = "wrong_user"
)

// authenticate checks the digest credentials of req (RFC 7616 with the SIP
// rules of RFC 3261 §22 and RFC 8760) against the user named by the To URI
// for REGISTER, by the From URI otherwise (extension@sip_domain; the domain
// is also the realm). The caller must have checked that From and To exist
// (handle does). With proxy set it
// reads Proxy-Authorization and challenges with 407/Proxy-Authenticate (for
// INVITE), otherwise Authorization and 401/WWW-Authenticate.
//
// On success it returns the user's identity and true. Otherwise it has
// already answered the request — a challenge (fresh, or stale=true for an
// expired nonce whose response was right), 400 for malformed credentials or
// a digest uri that is not the Request-URI, 403 when the credentials name a
// user other than the To user — and returns false. An unknown user and a
// wrong password get the same challenge, after the same work.
//
// It does not look at the user's status: a disabled user authenticates (so
// a phone can still unregister); each caller decides what that user may do.
func (s *Server) authenticate(req *sip.Request, rs responder, proxy bool) (store.SIPIdentity, bool) {
	// REGISTER authenticates the owner of the AOR in To; any other request
	// (INVITE, …) its sender, named in From.
	who := &req.To().Address
	if req.Method != sip.REGISTER {
		who = &req.From().Address
	}
	realm := strings.ToLower(who.Host)
	user := unescapeUser(who.User)
	if realm == "" || user == "" {
		s.reply(req, rs, 400, "No User to Authenticate")
		return store.SIPIdentity{}, false
	}
	hdrName := "Authorization"
	if proxy {
		hdrName = "Proxy-Authorization"
	}
	src := guard.IP(req.Source())
	guardUser := user + "@" + realm
	if s.guard.Blocked(src, guardUser) {
		s.metrics.blockedDrops.Inc()
		s.reply(req, rs, 403, "Forbidden")
		return store.SIPIdentity{}, false
	}
	// failed logs and counts a failure in metrics; guess also counts it
	// against the source in the guard. Only failures whose nonce verified
	// (ours, issued to this address, not expired) may be guesses: anything
	// else may come from anyone, with any source address on a datagram.
	// Stale or replayed nonces happen to honest phones (restarts,
	// retransmissions) and never count.
	failed := func(reason string, guess bool) {
		s.metrics.authFailures.WithLabelValues(reason).Inc()
		s.log.Info("sip auth failed", "reason", reason, "source", req.Source(), "user", guardUser, "method", methodLabel(req.Method))
		if guess {
			s.guard.Fail(src, guardUser, reason)
		}
	}

	// Several credentials may be present (one per realm); use ours, else
	// the last Digest one (parsed once: parsing is not cheap).
	var raw string
	var cred *digest.Credentials
	var err error
	for _, h := range req.GetHeaders(hdrName) {
		v := h.Value()
		if !digest.IsDigest(v) {
			continue
		}
		raw = v
		cred, err = digest.Parse(v, digest.ParseOptions{})
		if err == nil && strings.EqualFold(cred.Realm, realm) {
			break
		}
	}
	if raw == "" {
		s.challenge(req, rs, proxy, realm, false)
		return store.SIPIdentity{}, false
	}
	if err != nil {
		failed(authMalformed, false)
		s.reply(req, rs, 400, "Malformed Authorization")
		return store.SIPIdentity{}, false
	}
	if !strings.EqualFold(cred.Realm, realm) {
		// Credentials cached for another realm: ask again for this one.
		failed(authBadRealm, false)
		s.challenge(req, rs, proxy, realm, false)
		return store.SIPIdentity{}, false
	}
	now := s.db.Now()
	state, key := s.nonces.Check(cred.Nonce, realm, src, now)
	if state == digest.Bad {
		// Not a nonce we gave this address: invented, or from elsewhere.
		failed(authBadNonce, false)
		s.challenge(req, rs, proxy, realm, false)
		return store.SIPIdentity{}, false
	}
	guess := state == digest.Fresh
	if unescapeUser(cred.Username) != user {
		// RFC 3261 §10.3 step 4: this user may not touch that AOR.
		failed(authWrongUser, guess)
		s.reply(req, rs, 403, "Forbidden")
		return store.SIPIdentity{}, false
	}
	if !sameURI(cred.URI, &req.Recipient) {
		failed(authMalformed, false)
		s.reply(req, rs, 400, "Digest URI Mismatch")
		return store.SIPIdentity{}, false
	}

	id, err := s.db.SIPIdentity(realm, user)
	known := err == nil
	password := id.Password
	if !known {
		if errors.Is(err, store.ErrUnavailable) {
			// Several nodes: etcd does not answer (no quorum). Nothing
			// is decided; the phone retries (§21.5.4).
			s.log.Debug("sip identity lookup: the store does not answer", "user", guardUser, "err", err)
			res := s.newResponse(req, 503, "Service Unavailable")
			res.AppendHeader(sip.NewHeader("Retry-After", "5"))
			_ = s.send(req, rs, res)
			return store.SIPIdentity{}, false
		}
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Error("sip identity lookup", "user", guardUser, "err", err)
			s.reply(req, rs, 500, "Server Internal Error")
			return store.SIPIdentity{}, false
		}
		// Same work as for a real user, against a password nobody has.
		password = s.dummyPassword
	}
	// The store keeps the password (sealed), not HA1: derive it here.
	ha1 := digest.HA1(cred.Algorithm, cred.Username, cred.Realm, password)
	match := digest.Verify(cred, string(req.Method), ha1)
	switch {
	case !known:
		failed(authUnknownUser, guess)
		s.challenge(req, rs, proxy, realm, false)
		return store.SIPIdentity{}, false
	case !match:
		failed(authBadPassword, guess)
		s.challenge(req, rs, proxy, realm, false)
		return store.SIPIdentity{}, false
	case state == digest.Stale:
		// RFC 7616 §3.3: stale=true only when the response was right for
		// the old nonce, so the phone retries without asking its user.
		failed(authStale, false)
		s.challenge(req, rs, proxy, realm, true)
		return store.SIPIdentity{}, false
	}
	ok, stale := s.nonces.Use(key, digest.Count(cred), now)
	if !ok {
		reason := authReplay
		if stale {
			reason = authStale
		}
		failed(reason, false)
		s.challenge(req, rs, proxy, realm, stale)
		return store.SIPIdentity{}, false
	}
	s.guard.Succeed(src, guardUser)
	return id, true
}

// challenge answers 401 (407 for proxy) with one challenge per algorithm,
// SHA-256 first then MD5 (RFC 8760 §2.4: in order of preference), sharing
// one nonce; clients listed in Config.MD5OnlyUserAgents get MD5 alone.
func (s *Server) challenge(req *sip.Request, rs responder, proxy bool, realm string, stale bool) {
	code, reason, hdr := 401, "Unauthorized", "WWW-Authenticate"
	if proxy {
		code, reason, hdr = 407, "Proxy Authentication Required", "Proxy-Authenticate"
	}
	nonce := s.nonces.Issue(realm, guard.IP(req.Source()), s.db.Now())
	res := s.newResponse(req, code, reason)
	algs := challengeAlgs[:]
	if s.md5Only(req) {
		algs = algs[1:]
	}
	for _, alg := range algs {
		res.AppendHeader(sip.NewHeader(hdr, digest.ChallengeValue(realm, nonce, alg, stale)))
	}
	s.send(req, rs, res)
}

// challengeAlgs are the algorithms challenged with, in order of preference.
var challengeAlgs = [...]string{digest.SHA256, digest.MD5}

// md5Only reports whether req comes from a client that must be challenged
// with MD5 alone (Config.MD5OnlyUserAgents).
func (s *Server) md5Only(req *sip.Request) bool {
	if len(s.cfg.MD5OnlyUserAgents) == 0 {
		return false
	}
	h := req.GetHeader("User-Agent")
	if h == nil {
		return false
	}
	ua := strings.TrimSpace(h.Value())
	for _, p := range s.cfg.MD5OnlyUserAgents {
		if strings.HasPrefix(ua, p) {
			return true
		}
	}
	return false
}
