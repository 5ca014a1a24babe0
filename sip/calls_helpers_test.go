package sip

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/sip/media"
	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/pion/rtp"
)

// within bounds the wait for something the code under test does (a
// response, a request reaching a phone): it only ends a failing test, so it
// is generous for a loaded machine; a passing test waits as long as the
// code takes.
const within = 20 * time.Second

// callEnv is env with the call helpers (callers, phones, call records).
type callEnv struct {
	*env
}

// newCallEnv is newEnv (every component by default) with the Announcer's
// RTP on ports 30000-39999 unless opts say otherwise.
func newCallEnv(t testing.TB, opts ...envOption) *callEnv {
	t.Helper()
	opts = append(opts, func(p *parts) {
		if p.announcer != nil && p.announcer.RTPPortMin == 0 {
			p.announcer.RTPPortMin, p.announcer.RTPPortMax = 30000, 39999
		}
	})
	e := newEnv(t, Config{}, opts...)
	return &callEnv{env: e}
}

// metric returns the value of a metric on the registry every component
// registered on (a counter or gauge, with the given label value for
// vectors).
func (e *env) metric(name, label string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	return 0
}

// newTestUA returns a user agent with a client and a server on it (so the
// requests dialtone sends over the UA's flows reach the server's handlers).
func newTestUA(t testing.TB, opts ...sipgo.UserAgentOption) (*sipgo.UserAgent, *sipgo.Client, *sipgo.Server) {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	ua, err := sipgo.NewUA(append([]sipgo.UserAgentOption{sipgo.WithUserAgent("tester"),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet)),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	return ua, cli, srv
}

// incoming is an INVITE a phone received; the phone's handler waits until
// the test sent a final response (or the transaction ended).
type incoming struct {
	req       *sip.Request
	tx        sip.ServerTransaction
	tag       string
	cancelled chan struct{}
	finalSent chan struct{}
	once      sync.Once
}

// respond answers the INVITE with one To-tag for every response; a 2xx
// carries an SDP answer and the phone's Contact.
func (in *incoming) respond(t testing.TB, code int, reason string, contact string) {
	t.Helper()
	res := sip.NewResponseFromRequest(in.req, code, reason, nil)
	res.To().Params.Add("tag", in.tag)
	if code >= 180 && contact != "" {
		res.AppendHeader(sip.NewHeader("Contact", "<"+contact+">"))
	}
	if code >= 200 && code < 300 {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.SetBody([]byte("v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n"))
	}
	if err := in.tx.Respond(res); err != nil {
		t.Errorf("phone: respond %d: %v", code, err)
	}
	if code >= 200 {
		in.once.Do(func() { close(in.finalSent) })
	}
}

// inDialog builds a request of the callee in the dialog of the INVITE it
// answered: route set = the INVITE's Record-Route, to the caller's
// Contact, sent over transport to dst (its flow to dialtone).
func (in *incoming) inDialog(method sip.RequestMethod, seq uint32, transport, dst string) *sip.Request {
	r := sip.NewRequest(method, in.req.Contact().Address)
	for _, h := range in.req.GetHeaders("Record-Route") {
		r.AppendHeader(&sip.RouteHeader{Address: h.(*sip.RecordRouteHeader).Address})
	}
	from := sip.HeaderClone(in.req.To()).(*sip.ToHeader)
	from.Params.Add("tag", in.tag)
	r.AppendHeader(&sip.FromHeader{Address: from.Address, Params: from.Params})
	to := in.req.From()
	r.AppendHeader(&sip.ToHeader{Address: to.Address, Params: to.Params.Clone()})
	r.AppendHeader(sip.HeaderClone(in.req.CallID()))
	r.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	r.SetTransport(transport)
	r.SetDestination(dst)
	return r
}

// phone is a registered test user agent that records what reaches it.
type phone struct {
	t        testing.TB
	e        *callEnv
	ua       *sipgo.UserAgent
	cli      *sipgo.Client
	reg      *uac
	contact  string
	invites  chan *incoming
	acks     chan *sip.Request
	byes     chan *sip.Request
	notifies chan *sip.Request
	infos    chan *sip.Request
	messages chan *sip.Request
}

// newPhone makes a UA for user ext and registers it over transport with
// contact (e.g. an unreachable address: dialtone must use the flow). A
// non-empty userAgent replaces the User-Agent header.
func (e *callEnv) newPhone(transport, ext, password, contact, userAgent string) *phone {
	e.t.Helper()
	var opts []sipgo.UserAgentOption
	if transport == "TLS" {
		opts = append(opts, sipgo.WithUserAgenTLSConfig(&tls.Config{RootCAs: e.tlsRoots, MinVersion: tls.VersionTLS12}))
	}
	ua, cli, srv := newTestUA(e.t, opts...)
	p := &phone{t: e.t, e: e, ua: ua, cli: cli, contact: contact,
		invites: make(chan *incoming, 16), acks: make(chan *sip.Request, 16),
		byes: make(chan *sip.Request, 16), notifies: make(chan *sip.Request, 16),
		infos: make(chan *sip.Request, 16), messages: make(chan *sip.Request, 16)}
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		in := &incoming{req: req, tx: tx, tag: sip.GenerateTagN(10), cancelled: make(chan struct{}), finalSent: make(chan struct{})}
		tx.OnCancel(func(*sip.Request) { close(in.cancelled) })
		p.invites <- in
		select {
		case <-in.finalSent:
		case <-tx.Done():
		case <-time.After(20 * time.Second):
		}
	})
	srv.OnAck(func(req *sip.Request, _ sip.ServerTransaction) { p.acks <- req })
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		p.byes <- req
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	srv.OnInfo(func(req *sip.Request, tx sip.ServerTransaction) {
		p.infos <- req
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	srv.OnMessage(func(req *sip.Request, tx sip.ServerTransaction) {
		p.messages <- req
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	srv.OnNotify(func(req *sip.Request, tx sip.ServerTransaction) {
		p.notifies <- req
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	p.reg = newUAC(e.t, cli, transport, e.addr(transport), ext, password)
	if userAgent != "" {
		p.reg.ua = userAgent
	}
	if res := p.reg.register("", "Contact: <"+contact+">", "Expires: 600"); res.StatusCode != 200 {
		e.t.Fatalf("phone %s register: %d %s", ext, res.StatusCode, res.Reason)
	}
	return p
}

func (p *phone) nextInvite(wait time.Duration) *incoming {
	p.t.Helper()
	select {
	case in := <-p.invites:
		return in
	case <-time.After(wait):
		p.t.Fatalf("phone %s: no INVITE within %v", p.reg.user, wait)
		return nil
	}
}

// call is an outgoing INVITE transaction of a test caller.
type call struct {
	t      testing.TB
	req    *sip.Request
	tx     sip.ClientTransaction
	res    chan *sip.Response // every response, closed after the final one
	final  *sip.Response
	cli    *sipgo.Client
	callID string
}

// caller places authenticated INVITEs as one user.
type caller struct {
	t         testing.TB
	cli       *sipgo.Client
	transport string
	dst       string
	user      string
	password  string
	contact   string
	headers   []string // "Name: value" lines added to every INVITE
}

func (e *env) caller(cli *sipgo.Client, transport, ext, password string) *caller {
	if cli == nil {
		_, cli, _ = newTestUA(e.t)
	}
	return &caller{t: e.t, cli: cli, transport: transport, dst: e.addr(transport), user: ext, password: password,
		contact: "sip:" + ext + "@127.0.0.1:5999"}
}

func (c *caller) invite(target string, cseq uint32, callID, fromTag string, body []byte, auth string) *sip.Request {
	host := testDomain
	ruri := sip.Uri{Scheme: "sip", User: target, Host: host}
	req := sip.NewRequest(sip.INVITE, ruri)
	req.SetDestination(c.dst)
	req.SetTransport(c.transport)
	from := sip.Uri{Scheme: "sip", User: c.user, Host: testDomain}
	req.AppendHeader(&sip.FromHeader{Address: from, Params: sip.HeaderParams{{K: "tag", V: fromTag}}})
	req.AppendHeader(&sip.ToHeader{Address: ruri})
	cid := sip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: sip.INVITE})
	req.AppendHeader(sip.NewHeader("Contact", "<"+c.contact+">"))
	if auth != "" {
		req.AppendHeader(sip.NewHeader("Proxy-Authorization", auth))
	}
	for _, h := range c.headers {
		name, value, _ := strings.Cut(h, ":")
		req.AppendHeader(sip.NewHeader(name, strings.TrimSpace(value)))
	}
	if body != nil {
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		req.SetBody(body)
	}
	return req
}

// start sends INVITE → 407 → INVITE with credentials and returns the
// second transaction, whose responses arrive on call.res. With
// noAuth it returns after the first INVITE, whose final response is the
// call's final.
func (c *caller) start(target string, body []byte, noAuth bool) *call {
	c.t.Helper()
	n := callSeq.Add(1)
	callID := fmt.Sprintf("inv-%d-%d@test", n, time.Now().UnixNano())
	tag := fmt.Sprintf("ctag%d", n)
	first := c.invite(target, 1, callID, tag, body, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.cli.Do(ctx, first)
	if err != nil {
		c.t.Fatalf("INVITE %s: %v", target, err)
	}
	if noAuth || res.StatusCode != 407 {
		ch := make(chan *sip.Response, 1)
		ch <- res
		close(ch)
		return &call{t: c.t, req: first, res: ch, final: res, cli: c.cli, callID: callID}
	}
	var chal *digest.Challenge
	for _, h := range res.GetHeaders("Proxy-Authenticate") {
		if ch, err := digest.ParseChallenge(h.Value()); err == nil {
			chal = ch
			break
		}
	}
	if chal == nil {
		c.t.Fatalf("407 without a usable Proxy-Authenticate:\n%s", res)
	}
	ruri := first.Recipient
	cred, err := digest.Digest(chal, digest.Options{Method: "INVITE", URI: ruri.String(), Username: c.user, Password: c.password, Count: 1})
	if err != nil {
		c.t.Fatal(err)
	}
	req := c.invite(target, 2, callID, tag, body, cred.String())
	tx, err := c.cli.TransactionRequest(context.Background(), req)
	if err != nil {
		c.t.Fatalf("INVITE with credentials: %v", err)
	}
	cl := &call{t: c.t, req: req, tx: tx, res: make(chan *sip.Response, 32), cli: c.cli, callID: callID}
	go func() {
		defer close(cl.res)
		defer tx.Terminate()
		for {
			select {
			case r := <-tx.Responses():
				cl.res <- r
				if r.StatusCode >= 200 {
					return
				}
			case <-tx.Done():
				return
			}
		}
	}()
	return cl
}

// next returns the next response (nil when the transaction ended).
func (cl *call) next(wait time.Duration) *sip.Response {
	cl.t.Helper()
	select {
	case r, ok := <-cl.res:
		if !ok {
			return nil
		}
		if r.StatusCode >= 200 {
			cl.final = r
		}
		return r
	case <-time.After(wait):
		cl.t.Fatalf("no response within %v", wait)
		return nil
	}
}

// waitFinal skips provisional responses and returns the final one.
func (cl *call) waitFinal(wait time.Duration) *sip.Response {
	cl.t.Helper()
	if cl.final != nil {
		return cl.final
	}
	deadline := time.Now().Add(wait)
	for {
		r := cl.next(time.Until(deadline))
		if r == nil {
			cl.t.Fatalf("transaction ended without a final response")
		}
		if r.StatusCode >= 200 {
			return r
		}
	}
}

// cancel sends CANCEL for the call's INVITE (same branch and CSeq number).
func (cl *call) cancel() *sip.Response {
	cl.t.Helper()
	inv := cl.req
	c := sip.NewRequest(sip.CANCEL, inv.Recipient)
	c.AppendHeader(sip.HeaderClone(inv.Via()))
	c.AppendHeader(sip.HeaderClone(inv.From()))
	c.AppendHeader(sip.HeaderClone(inv.To()))
	c.AppendHeader(sip.HeaderClone(inv.CallID()))
	c.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	mf := sip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	c.SetBody(nil)
	c.SetTransport(inv.Transport())
	c.SetDestination(inv.Destination())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := cl.cli.Do(ctx, c, func(*sipgo.Client, *sip.Request) error { return nil })
	if err != nil {
		cl.t.Fatalf("CANCEL: %v", err)
	}
	return res
}

// inDialog builds an ACK or BYE in the dialog a 2xx established, routed by
// its Record-Route (reversed) to dialtone.
func (cl *call) inDialog(method sip.RequestMethod, ok *sip.Response, seq uint32) *sip.Request {
	cl.t.Helper()
	ct := ok.Contact()
	if ct == nil {
		cl.t.Fatalf("2xx without Contact:\n%s", ok)
	}
	r := sip.NewRequest(method, ct.Address)
	rrs := ok.GetHeaders("Record-Route")
	for i := len(rrs) - 1; i >= 0; i-- {
		r.AppendHeader(&sip.RouteHeader{Address: rrs[i].(*sip.RecordRouteHeader).Address})
	}
	r.AppendHeader(sip.HeaderClone(cl.req.From()))
	r.AppendHeader(sip.HeaderClone(ok.To()))
	r.AppendHeader(sip.HeaderClone(cl.req.CallID()))
	r.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	r.SetTransport(cl.req.Transport())
	r.SetDestination(cl.req.Destination())
	return r
}

// rtpSink is a caller's RTP socket. Its reader signals every datagram it
// records, so tests wait for packets as events, not for time to pass.
type rtpSink struct {
	conn    *net.UDPConn
	mu      sync.Mutex
	pkts    []rtpRecv
	marks   map[string]int // mark → RTP packets read before it
	arrived chan struct{}  // signalled (never blocking) after each datagram
	done    chan struct{}
}

type rtpRecv struct {
	at  time.Time
	pkt rtp.Packet
	src *net.UDPAddr
}

// sinkMark starts the datagrams rtpSink.mark sends (never valid RTP: the
// version bits of 'd' are 01).
const sinkMark = "dialtone-test-mark "

func newRTPSink(t testing.TB) *rtpSink {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &rtpSink{conn: c, marks: map[string]int{}, arrived: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 2048)
		for {
			n, src, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			if m, ok := strings.CutPrefix(string(buf[:n]), sinkMark); ok {
				s.marks[m] = len(s.pkts)
			} else {
				var p rtp.Packet
				if err := p.Unmarshal(append([]byte(nil), buf[:n]...)); err == nil {
					s.pkts = append(s.pkts, rtpRecv{at: time.Now(), pkt: p, src: src})
				}
			}
			s.mu.Unlock()
			select {
			case s.arrived <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-s.done })
	return s
}

func (s *rtpSink) port() int { return s.conn.LocalAddr().(*net.UDPAddr).Port }

func (s *rtpSink) packets() []rtpRecv {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]rtpRecv(nil), s.pkts...)
}

// waitUntil returns as soon as cond (called with the sink locked) holds
// after a datagram arrived; it fails the test after d (a bound for a
// failing test, not a wait: a passing test never sleeps).
func (s *rtpSink) waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		ok := cond()
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-s.arrived:
		case <-timeout.C:
			t.Fatalf("RTP sink: timed out after %v waiting for %s", d, what)
		}
	}
}

// waitPackets waits until the sink has read n RTP packets.
func (s *rtpSink) waitPackets(t testing.TB, n int) {
	t.Helper()
	s.waitUntil(t, 20*time.Second, fmt.Sprintf("%d RTP packets", n), func() bool { return len(s.pkts) >= n })
}

var markSeq atomic.Uint64

// mark sends a datagram to the sink from a socket of its own, waits until
// the sink has read it and returns how many RTP packets the sink had read
// before it. A socket's receive queue is first in, first out, and on the
// loopback interface a datagram is queued on the receiving socket by the
// sending system call: every packet sent to the sink before mark was called
// has been read by the time it returns, so the sink is drained.
func (s *rtpSink) mark(t testing.TB) int {
	t.Helper()
	c, err := net.DialUDP("udp4", nil, s.conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := fmt.Sprint(markSeq.Add(1))
	if _, err := c.Write([]byte(sinkMark + m)); err != nil {
		t.Fatal(err)
	}
	var n int
	s.waitUntil(t, 20*time.Second, "the mark", func() bool {
		var ok bool
		n, ok = s.marks[m]
		return ok
	})
	return n
}

// offer is an SDP offer for an audio stream at port with the given formats
// ("0 8 101", "111", …).
func offer(port int, formats string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio %d RTP/AVP %s\r\n", port, formats)
	for _, f := range strings.Fields(formats) {
		switch f {
		case "0":
			b.WriteString("a=rtpmap:0 PCMU/8000\r\n")
		case "8":
			b.WriteString("a=rtpmap:8 PCMA/8000\r\n")
		case "101":
			b.WriteString("a=rtpmap:101 telephone-event/8000\r\n")
		case "111":
			b.WriteString("a=rtpmap:111 opus/48000/2\r\n")
		}
	}
	b.WriteString("a=sendrecv\r\n")
	return []byte(b.String())
}

// toneWAV is a 16-bit PCM 8 kHz mono WAV of a 440 Hz tone lasting d.
func toneWAV(d time.Duration) []byte {
	n := int(d * media.SampleRate / time.Second)
	data := make([]byte, 2*n)
	for i := 0; i < n; i++ {
		v := int16(8000 * math.Sin(2*math.Pi*440*float64(i)/media.SampleRate))
		binary.LittleEndian.PutUint16(data[2*i:], uint16(v))
	}
	var b bytes.Buffer
	w := func(v any) { _ = binary.Write(&b, binary.LittleEndian, v) }
	b.WriteString("RIFF")
	w(uint32(36 + len(data)))
	b.WriteString("WAVEfmt ")
	w(uint32(16))
	w(uint16(1))                    // PCM
	w(uint16(1))                    // mono
	w(uint32(media.SampleRate))     // rate
	w(uint32(2 * media.SampleRate)) // byte rate
	w(uint16(2))                    // block align
	w(uint16(16))                   // bits
	b.WriteString("data")
	w(uint32(len(data)))
	b.Write(data)
	return b.Bytes()
}

func shortAnnouncement(t testing.TB) *media.Announcement {
	t.Helper()
	a, err := media.LoadWAV(bytes.NewReader(toneWAV(media.MinDuration)))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// disable disables a user.
func (e *callEnv) disable(u store.User) {
	e.t.Helper()
	if _, err := e.db.DisableUser(e.acct.ID, u.ID, store.System); err != nil {
		e.t.Fatal(err)
	}
}

// calls returns the account's call records, newest first.
func (e *callEnv) callRecords() []store.CallRecord {
	e.t.Helper()
	rs, err := e.db.Calls(e.acct.ID, store.CallFilter{})
	if err != nil {
		e.t.Fatal(err)
	}
	return rs
}

// waitRecord waits for the call record of callID (written after the final
// response, on the INVITE handler's goroutine) and returns it.
func (e *callEnv) waitRecord(callID string) store.CallRecord {
	e.t.Helper()
	var rec store.CallRecord
	waitFor(e.t, "call record of "+callID, func() bool {
		for _, r := range e.callRecords() {
			if r.CallID == callID {
				rec = r
				return true
			}
		}
		return false
	})
	return rec
}

// longAnnouncement is a tone of media.MaxDuration: a call cancelled during
// it is cancelled long before its end, however slow the machine.
func longAnnouncement(t testing.TB) *media.Announcement {
	t.Helper()
	a, err := media.LoadWAV(bytes.NewReader(toneWAV(media.MaxDuration)))
	if err != nil {
		t.Fatal(err)
	}
	return a
}
