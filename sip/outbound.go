package sip

// What the components share to send requests of their own (the proxy's
// forwarded requests, CANCEL/ACK/BYE of a fork, check-sync NOTIFYs) and to
// name this server in them: the flow a request leaves over, our Via, and
// our URI as seen from a peer.

import (
	"net"
	"strings"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// localIPFor is the local address this host uses to reach remote (ip:port
// or ip): a connected UDP socket learns it without sending anything.
func localIPFor(remote string) net.IP {
	host, port, err := net.SplitHostPort(remote)
	if err != nil {
		host, port = remote, "5060"
	}
	host = strings.Trim(host, "[]")
	c, err := net.Dial("udp", net.JoinHostPort(host, port))
	if err != nil {
		return nil
	}
	defer c.Close()
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok {
		return a.IP
	}
	return nil
}

// advertisedHost is the host we put in Via, Record-Route and Contact for a
// message to or from remote: Config.Hostname, else our address towards it.
func (s *Server) advertisedHost(remote string) string {
	if s.cfg.Hostname != "" {
		return s.cfg.Hostname
	}
	if ip := localIPFor(remote); ip != nil {
		return ip.String()
	}
	return "127.0.0.1"
}

// listenPort is our listening port for transport ("UDP", "tcp", …), or 0.
func (s *Server) listenPort(transport string) int {
	// ListenPorts takes the layer's lock (GetListenPort does not).
	if ps := s.ua.TransportLayer().ListenPorts(sip.NetworkToLower(transport)); len(ps) > 0 {
		return ps[0]
	}
	return 0
}

// ourURI is a SIP URI for this server as seen from remote over transport,
// with ;transport and, for routes, ;lr.
func (s *Server) ourURI(remote, transport string, lr bool) sip.Uri {
	u := sip.Uri{Scheme: "sip", Host: s.advertisedHost(remote), Port: s.listenPort(transport)}
	u.UriParams = sip.NewParams()
	u.UriParams.Add("transport", sip.NetworkToLower(transport))
	if lr {
		u.UriParams.Add("lr", "")
	}
	return u
}

// noBuild is a client option that keeps a request exactly as built: sipgo
// adds no headers when any option is passed.
func noBuild(*sipgo.Client, *sip.Request) error { return nil }

// addVia puts our Via on top of fwd, a request we send over transport to
// dest. When fwd is a forwarded request, the previous hop's Via gets
// received/rport (RFC 3581) from src, the address it came from.
func (s *Server) addVia(fwd *sip.Request, src, transport, dest string) {
	if prev := fwd.Via(); prev != nil && src != "" {
		if h, p, err := net.SplitHostPort(src); err == nil {
			if prev.Params.Has("rport") {
				prev.Params.Add("rport", p)
				prev.Params.Add("received", h)
			} else if !strings.EqualFold(prev.Host, h) {
				prev.Params.Add("received", h)
			}
		}
	}
	v := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: strings.ToUpper(transport),
		Host: s.advertisedHost(dest), Port: s.listenPort(transport), Params: sip.NewParams()}
	v.Params.Add("branch", sip.GenerateBranchN(16))
	v.Params.Add("rport", "")
	fwd.PrependHeader(v)
}

// setFlow makes r leave over transport tr towards dest (a registered
// flow's source address). Over TCP/TLS sipgo reuses the pooled connection
// from dest. Over UDP it sends from the listening socket when dest has
// written to it since it started; otherwise (after a restart, say) we
// still send from the listening socket rather than from a fresh port, so
// that a NAT binding made by the phone's REGISTERs to our port still
// matches.
func (s *Server) setFlow(r *sip.Request, tr, dest string) {
	r.SetTransport(tr)
	r.SetDestination(dest)
	if sip.NetworkToLower(tr) != "udp" {
		return
	}
	pool := s.ua.TransportLayer().Pool("udp")
	if c := pool.Get(dest); c != nil {
		_, _ = c.TryClose()
		return
	}
	if a, ok := s.udpListenerAddr(); ok {
		r.Laddr = a
	}
}

// udpListenerAddr finds the address under which sipgo pools our UDP
// listening socket (its local address: a wildcard or one of this host's
// addresses, with the listening port).
func (s *Server) udpListenerAddr() (sip.Addr, bool) {
	port := s.listenPort("udp")
	if port == 0 {
		return sip.Addr{}, false
	}
	pool := s.ua.TransportLayer().Pool("udp")
	cands := []net.IP{net.IPv4zero, net.IPv6unspecified}
	for ip := range s.localIPs() {
		cands = append(cands, net.ParseIP(ip))
	}
	for _, ip := range cands {
		a := sip.Addr{IP: ip, Port: port}
		if c := pool.Get(a.String()); c != nil {
			_, _ = c.TryClose()
			return a, true
		}
	}
	return sip.Addr{}, false
}
