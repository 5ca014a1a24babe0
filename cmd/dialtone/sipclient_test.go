package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// phone is a minimal SIP user agent for end-to-end tests: it registers with
// digest auth, choosing the algorithm itself (sipgo's client always answers
// the first challenge).
type phone struct {
	t         *testing.T
	cli       *sipgo.Client
	ua        *sipgo.UserAgent
	transport string // "UDP" or "TCP"
	target    string // dialtone's host:port
	domain    string
	user      string
	password  string
	userAgent string
	callID    string
	mu        sync.Mutex
	cseq      uint32
}

func newPhone(t *testing.T, transport, target, domain, user, password string) *phone {
	t.Helper()
	return newPhoneTLS(t, transport, target, domain, user, password, nil)
}

// newPhoneTLS is newPhone with a TLS client configuration (for transport "TLS").
func newPhoneTLS(t *testing.T, transport, target, domain, user, password string, tlsConf *tls.Config) *phone {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler) // sipgo's own warnings would drown the test output
	opts := []sipgo.UserAgentOption{sipgo.WithUserAgent(user),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet)),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet))}
	if tlsConf != nil {
		opts = append(opts, sipgo.WithUserAgenTLSConfig(tlsConf))
	}
	ua, err := sipgo.NewUA(opts...)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	return &phone{t: t, cli: cli, ua: ua, transport: transport, target: target, domain: domain, user: user,
		password: password, userAgent: "e2e-phone/1.0", callID: sip.GenerateTagN(16)}
}

// register sends REGISTER (answering one challenge with alg) and returns the
// final response. contact "" sends no Contact (a query); "*" is the wildcard.
func (p *phone) register(contact string, expires int, alg string) *sip.Response {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := p.tryRegister(ctx, contact, expires, alg)
	if err != nil {
		p.t.Fatal(err)
	}
	return res
}

// tryRegister is register that reports errors instead of failing the test.
func (p *phone) tryRegister(ctx context.Context, contact string, expires int, alg string) (*sip.Response, error) {
	res, err := p.send(ctx, contact, expires, "")
	if err != nil || res.StatusCode != 401 {
		return res, err
	}
	authz, err := p.answer(res, alg)
	if err != nil {
		return nil, err
	}
	return p.send(ctx, contact, expires, authz)
}

// answer returns the Authorization answering res's 401 challenge for alg.
func (p *phone) answer(res *sip.Response, alg string) (string, error) {
	var chal *digest.Challenge
	for _, h := range res.GetHeaders("WWW-Authenticate") {
		c, err := digest.ParseChallenge(h.Value())
		if err != nil {
			return "", fmt.Errorf("bad challenge %q: %v", h.Value(), err)
		}
		if strings.EqualFold(c.Algorithm, alg) {
			chal = c
			break
		}
	}
	if chal == nil {
		return "", fmt.Errorf("no %s challenge in %v", alg, res.GetHeaders("WWW-Authenticate"))
	}
	cred, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: "sip:" + p.domain,
		Username: p.user, Password: p.password, Count: 1, Cnonce: sip.GenerateTagN(12)})
	if err != nil {
		return "", err
	}
	return cred.String(), nil
}

func (p *phone) send(ctx context.Context, contact string, expires int, authz string) (*sip.Response, error) {
	p.mu.Lock()
	p.cseq++
	cseq := p.cseq
	p.mu.Unlock()
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: p.domain})
	aor := sip.Uri{Scheme: "sip", User: p.user, Host: p.domain}
	fromParams := sip.NewParams()
	fromParams.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(&sip.FromHeader{Address: aor, Params: fromParams})
	req.AppendHeader(&sip.ToHeader{Address: aor})
	callID := sip.CallIDHeader(p.callID)
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: sip.REGISTER})
	switch contact {
	case "":
	case "*":
		req.AppendHeader(sip.NewHeader("Contact", "*"))
	default:
		req.AppendHeader(sip.NewHeader("Contact", "<"+contact+">"))
	}
	req.AppendHeader(sip.NewHeader("Expires", fmt.Sprint(expires)))
	req.AppendHeader(sip.NewHeader("User-Agent", p.userAgent))
	if authz != "" {
		req.AppendHeader(sip.NewHeader("Authorization", authz))
	}
	req.SetTransport(p.transport)
	req.SetDestination(p.target)
	res, err := p.cli.Do(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("REGISTER over %s: %w", p.transport, err)
	}
	return res, nil
}
