package sip

// The internal hop between the nodes of a deployment on etcd (docs/design.md,
// "Several nodes"): a phone's flow (its TCP/TLS connection, its UDP NAT
// pinhole) lives on the node it registered through, named in its binding
// (store.Binding.Node). A request for the phone arriving at another node is
// sent to the owning node over TCP, carrying X-Dialtone-Hop, which the
// owner verifies before it relays the request on the phone's flow. Nothing
// else from another node is trusted: without a valid hop header a request
// is an outside request, whatever its source.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo/sip"
)

// hopHeader carries a node's claim on a request it passes to another node:
//
//	X-Dialtone-Hop: <from node>;ts=<unix seconds>;acct=<account id>;user=<user id>;mac=<hex>
//
// mac is HMAC-SHA256, under the deployment's hop key (store.DB.HopKey),
// over the method, Call-ID, From tag, Request-URI (the target binding's
// contact), account, user, sending node and ts.
const hopHeader = "X-Dialtone-Hop"

// Hop policy.
const (
	// hopTransport is the transport between nodes: TCP (a node reaches
	// another directly, no NAT; one connection carries every call between
	// the two, and a large INVITE is never fragmented).
	hopTransport = "TCP"
	// hopMaxSkew is how far a hop's ts may be from the receiver's clock.
	hopMaxSkew = 30 * time.Second
	// hopRingMax bounds how long the owning node rings a phone for an
	// INVITE that came over a hop: the node that took the call decides
	// (ring timeout, callflow), and cancels earlier.
	hopRingMax = 10 * time.Minute
	// hopDialTimeout bounds opening a connection to another node: the
	// branches of a call start one after the other, so a node that drops
	// packets silently would hold the others back for the whole
	// connectTimeout. Nodes are near each other; a live one answers fast.
	hopDialTimeout = 2 * time.Second
	// maxHopField bounds each field of the header.
	maxHopField = 128
)

// hopClaim is a parsed X-Dialtone-Hop value.
type hopClaim struct {
	node       string
	ts         int64
	acct, user string
	mac        []byte
}

// hopToken reports whether s may stand in the header unquoted: a non-empty
// run of token characters without ';' or '='.
func hopToken(s string) bool {
	if s == "" || len(s) > maxHopField {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-._~!*'+`%", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// String is the header value.
func (h hopClaim) String() string {
	return h.node + ";ts=" + strconv.FormatInt(h.ts, 10) + ";acct=" + h.acct + ";user=" + h.user + ";mac=" + hex.EncodeToString(h.mac)
}

var errBadHop = errors.New("malformed hop header")

// parseHop reads an X-Dialtone-Hop value: each field exactly once, no
// other field, tokens only, a 32-byte mac.
func parseHop(v string) (hopClaim, error) {
	parts := strings.Split(strings.TrimSpace(v), ";")
	if len(parts) != 5 {
		return hopClaim{}, errBadHop
	}
	h := hopClaim{node: strings.TrimSpace(parts[0])}
	if !hopToken(h.node) {
		return hopClaim{}, errBadHop
	}
	seen := map[string]bool{}
	for _, p := range parts[1:] {
		k, val, ok := strings.Cut(p, "=")
		k, val = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(val)
		if !ok || seen[k] || !hopToken(val) {
			return hopClaim{}, errBadHop
		}
		seen[k] = true
		switch k {
		case "ts":
			ts, err := strconv.ParseInt(val, 10, 64)
			if err != nil || ts <= 0 {
				return hopClaim{}, errBadHop
			}
			h.ts = ts
		case "acct":
			h.acct = val
		case "user":
			h.user = val
		case "mac":
			mac, err := hex.DecodeString(val)
			if err != nil || len(mac) != sha256.Size {
				return hopClaim{}, errBadHop
			}
			h.mac = mac
		default:
			return hopClaim{}, errBadHop
		}
	}
	return h, nil
}

// hopMAC is the claim's mac for req (its method, Call-ID, From tag and
// Request-URI as they stand), each field length-prefixed.
func hopMAC(key []byte, req *sip.Request, h hopClaim) []byte {
	m := hmac.New(sha256.New, key)
	var n [8]byte
	put := func(s string) {
		binary.BigEndian.PutUint32(n[:4], uint32(len(s)))
		m.Write(n[:4])
		m.Write([]byte(s))
	}
	tag, _ := req.From().Params.Get("tag")
	put("dialtone-hop-v1")
	put(string(req.Method))
	put(req.CallID().Value())
	put(tag)
	put(req.Recipient.String())
	put(h.acct)
	put(h.user)
	put(h.node)
	binary.BigEndian.PutUint64(n[:], uint64(h.ts))
	m.Write(n[:])
	return m.Sum(nil)
}

// nodes is what the endpoint knows of the other nodes: the hop key and
// the ids of dead nodes already logged.
type nodes struct {
	key    func() []byte // nil on one node (bbolt)
	mu     sync.Mutex
	logged map[string]bool // nodes logged as gone (once each, until they are back)
}

func newNodes(s *Server) *nodes {
	n := &nodes{logged: map[string]bool{}}
	n.key = sync.OnceValue(func() []byte {
		k, err := s.db.HopKey()
		if err != nil {
			if !errors.Is(err, store.ErrNoNodes) {
				s.log.Error("hop key: requests from other nodes are refused", "err", err)
			}
			return nil
		}
		return k
	})
	return n
}

// remote reports whether b's flow is held by another node.
func (s *Server) remote(b store.Binding) bool {
	return b.Node != "" && b.Node != s.db.NodeID()
}

// peer looks up the node that holds b's flow, with its SIPAddr resolved
// to an IP address and port (an announced host name is looked up once
// here, so the dialogs through it record the address its requests come
// from). A node without an announcement (gone), or whose name does not
// resolve, is reported false and logged once at debug.
func (s *Server) peer(id string) (store.NodeInfo, bool) {
	n, err := s.db.Node(id)
	if err == nil {
		n.SIPAddr, err = resolveHostPort(n.SIPAddr)
	}
	s.nodes.mu.Lock()
	defer s.nodes.mu.Unlock()
	if err != nil || n.SIPAddr == "" {
		if !s.nodes.logged[id] {
			s.nodes.logged[id] = true
			s.log.Debug("node unreachable: its bindings are skipped", "node", id, "err", err)
		}
		return store.NodeInfo{}, false
	}
	delete(s.nodes.logged, id)
	return n, true
}

// signHop adds our X-Dialtone-Hop to req, a request for binding b that
// goes to b's node (req's Request-URI is b's contact). Any hop header req
// carried is removed first.
func (s *Server) signHop(req *sip.Request, b store.Binding) error {
	stripHop(req)
	key := s.nodes.key()
	if key == nil {
		return errors.New("no hop key")
	}
	h := hopClaim{node: s.db.NodeID(), ts: s.db.Now().Unix(), acct: b.AccountID, user: b.UserID}
	if !hopToken(h.node) || !hopToken(h.acct) || !hopToken(h.user) {
		return errBadHop
	}
	h.mac = hopMAC(key, req, h)
	req.AppendHeader(sip.NewHeader(hopHeader, h.String()))
	return nil
}

// hopped is a request another node passed us, verified: from which node,
// for which of our bindings.
type hopped struct {
	from    store.NodeInfo
	binding store.Binding
}

// verifyHop checks req's X-Dialtone-Hop: exactly one, well-formed, over
// TCP or TLS, fresh (hopMaxSkew), from another node, with the right mac,
// from the address that node announced (its host), for a live binding
// whose contact is the Request-URI and whose flow is ours. Cheap checks
// come first: a forged header costs no store read unless its mac is right.
func (s *Server) verifyHop(req *sip.Request) (hopped, bool) {
	hs := req.GetHeaders(hopHeader)
	key := s.nodes.key()
	if len(hs) != 1 || key == nil || !sip.IsReliable(req.Transport()) {
		return hopped{}, false
	}
	h, err := parseHop(hs[0].Value())
	if err != nil || h.node == s.db.NodeID() {
		return hopped{}, false
	}
	if d := s.db.Now().Sub(time.Unix(h.ts, 0)); d > hopMaxSkew || d < -hopMaxSkew {
		return hopped{}, false
	}
	if !hmac.Equal(h.mac, hopMAC(key, req, h)) {
		return hopped{}, false
	}
	from, ok := s.peer(h.node)
	if !ok || hostOf(from.SIPAddr) != hostOf(req.Source()) {
		return hopped{}, false
	}
	bs, err := s.db.Bindings(h.acct, h.user)
	if err != nil {
		return hopped{}, false
	}
	ruri := req.Recipient.String()
	for _, b := range bs {
		if s.remote(b) {
			continue
		}
		var c sip.Uri
		if sip.ParseUri(b.Contact, &c) == nil && c.String() == ruri {
			return hopped{from: from, binding: b}, true
		}
	}
	return hopped{}, false
}

// stripHop removes every X-Dialtone-Hop header from r (any case).
func stripHop(r headerSet) {
	var names []string
	for _, h := range r.GetHeaders(hopHeader) {
		if !slices.Contains(names, h.Name()) {
			names = append(names, h.Name())
		}
	}
	for _, n := range names {
		for r.RemoveHeader(n) {
		}
	}
}

// resolveTimeout bounds the look-up of a node's announced host name.
const resolveTimeout = 2 * time.Second

// resolveHostPort turns host:port into ip:port (the first address of a
// host name).
func resolveHostPort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if net.ParseIP(host) != nil {
		return addr, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return "", err
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("%s: no address", host)
	}
	return net.JoinHostPort(ips[0].IP.String(), port), nil
}

// hopRoute is the Route a request to another node's party carries: that
// node's announced address, which it knows as its own (isOurs).
func hopRoute(addr string) sip.Uri {
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	u := sip.Uri{Scheme: "sip", Host: host, Port: p, UriParams: sip.NewParams()}
	u.UriParams.Add("transport", strings.ToLower(hopTransport))
	u.UriParams.Add("lr", "")
	return u
}
