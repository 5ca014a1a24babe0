package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
)

// ua is one user agent (one SIP user). The immutable part is set at start;
// the exchange state is guarded by its lane's mutex.
type ua struct {
	idx                    int
	name, password, domain string
	uri                    []byte // sip:domain, the Request-URI and digest uri
	ha2                    []byte // H(REGISTER:uri) for the configured algorithm
	lane                   *lane

	busy     bool
	phase    uint8  // 1: waiting for the 401, 2: waiting for the 200
	cseq     uint32 // CSeq of the request in flight
	gen      uint32 // exchange number, for timeouts and fresh Call-IDs
	start    int64  // ns since engine.base
	st       *stats
	ha1Realm string
	ha1      []byte

	// -storm (storm.go): the current transaction's bytes (retransmitted
	// as they are), its number (timers of older ones are stale), start and
	// Timer E interval in ns.
	last     []byte
	txn      uint32
	txStart  int64
	interval int64
	// authTries counts the challenges answered in this attempt.
	authTries uint8
}

// lane is one UDP socket or one TCP connection with its reader goroutine.
// Users are spread over lanes round robin; a user always uses its lane.
type lane struct {
	e     *engine
	id    int
	p     msgParams
	conn  net.Conn
	pc    *ipv4.PacketConn // UDP: for recvmmsg/sendmmsg
	tcp   bool
	wmu   sync.Mutex // serialises TCP writes
	users []*ua

	mu     sync.Mutex
	cursor int
	fifo   []pending
	head   int
	rng    uint64
	timers timerHeap // -storm
}

type pending struct {
	u        *ua
	gen      uint32
	deadline int64
}

type engine struct {
	cfg   *config
	users []*ua
	lanes []*lane
	base  time.Time
	runID string

	cur      atomic.Pointer[stats]
	running  atomic.Bool // new exchanges may start
	afap     atomic.Bool // as fast as possible: each completion starts the next
	inflight atomic.Int64
	cursor   int // pacer's round-robin position (pacer goroutine only)

	// budget, when positive, is how many more exchanges AFAP mode may start
	// (for runN); 0 means unlimited.
	budget  atomic.Int64
	limited atomic.Bool

	// stepFn replaces a ramp step (tests); nil: phase with -step.
	stepFn func(ctx context.Context, rate float64) *result
	storm  atomic.Pointer[stormState] // -storm (storm.go)

	wg       sync.WaitGroup
	closing  atomic.Bool
	readErrs atomic.Uint64
}

func (e *engine) now() int64 { return int64(time.Since(e.base)) }

// newEngine opens the lanes and prepares the users' digest constants.
func newEngine(cfg *config, users []userCred) (*engine, error) {
	if len(users) == 0 {
		return nil, errors.New("no users")
	}
	var rid [4]byte
	if _, err := rand.Read(rid[:]); err != nil {
		return nil, err
	}
	e := &engine{cfg: cfg, base: time.Now(), runID: hex.EncodeToString(rid[:])}
	e.cur.Store(newStats())
	nl := cfg.conns
	if nl > len(users) {
		nl = len(users)
	}
	ha2s := map[string][]byte{}
	bufSize := 4 << 20
	if cfg.storm { // every user's response may arrive in one burst
		bufSize = 16 << 20
	}
	for i := 0; i < nl; i++ {
		var c net.Conn
		var err error
		if cfg.transport == "tcp" {
			c, err = net.DialTimeout("tcp", cfg.target, 5*time.Second)
		} else {
			var uc *net.UDPConn
			raddr, rerr := net.ResolveUDPAddr("udp", cfg.target)
			if rerr != nil {
				e.close()
				return nil, rerr
			}
			uc, err = net.DialUDP("udp", nil, raddr)
			if err == nil {
				setBuffers(uc, bufSize)
				c = uc
			}
		}
		if err != nil {
			e.close()
			return nil, fmt.Errorf("connect to %s over %s: %w", cfg.target, cfg.transport, err)
		}
		tr := "UDP"
		if cfg.transport == "tcp" {
			tr = "TCP"
		}
		l := &lane{e: e, id: i, conn: c, tcp: cfg.transport == "tcp", rng: uint64(i)*0x9e3779b97f4a7c15 + uint64(time.Now().UnixNano()) | 1,
			p: msgParams{transport: tr, laddr: c.LocalAddr().String(), runID: e.runID, expires: cfg.expires,
				contact: cfg.contact, newContact: cfg.workload == "new-contact"}}
		if uc, ok := c.(*net.UDPConn); ok {
			l.pc = ipv4.NewPacketConn(uc)
		}
		e.lanes = append(e.lanes, l)
	}
	for i, uc := range users {
		dom := uc.domain
		if dom == "" {
			dom = cfg.domain
		}
		uri := "sip:" + dom
		h2, ok := ha2s[uri]
		if !ok {
			h2 = ha2(cfg.algorithm, "REGISTER", uri)
			ha2s[uri] = h2
		}
		u := &ua{idx: i, name: uc.user, password: uc.password, domain: dom, uri: []byte(uri), ha2: h2}
		u.lane = e.lanes[i%len(e.lanes)]
		u.lane.users = append(u.lane.users, u)
		e.users = append(e.users, u)
	}
	for _, l := range e.lanes {
		e.wg.Add(1)
		go l.read()
	}
	return e, nil
}

func (e *engine) close() {
	e.closing.Store(true)
	for _, l := range e.lanes {
		l.conn.Close()
	}
	e.wg.Wait()
}

// write sends one message on the lane; TCP writes are serialised.
func (l *lane) write(b []byte) error {
	if l.tcp {
		l.wmu.Lock()
		_, err := l.conn.Write(b)
		l.wmu.Unlock()
		return err
	}
	_, err := l.conn.Write(b)
	return err
}

// send writes b for the exchange (u, gen) and fails it if the write fails.
func (l *lane) send(b []byte, u *ua, gen uint32) {
	if err := l.write(b); err != nil {
		l.mu.Lock()
		if u.busy && u.gen == gen {
			l.finishLocked(u, l.e.now(), "send error")
		}
		l.mu.Unlock()
	}
}

// startLocked begins a new exchange for u (which must not be busy) and
// appends the first REGISTER to buf.
func (l *lane) startLocked(u *ua, now int64, st *stats, buf []byte) []byte {
	u.busy, u.phase, u.st, u.start = true, 1, st, now
	u.gen++
	u.cseq++
	st.started.Add(1)
	l.e.inflight.Add(1)
	l.fifo = append(l.fifo, pending{u: u, gen: u.gen, deadline: now + int64(l.e.cfg.timeout)})
	return appendRegister(buf, &l.p, u, u.cseq, u.gen, l.e.cfg.freshCallID, nil)
}

func (l *lane) finishLocked(u *ua, now int64, failKind string) {
	u.busy = false
	if failKind == "" {
		u.st.success(time.Duration(now - u.start))
	} else {
		u.st.fail(failKind)
	}
	l.e.inflight.Add(-1)
}

// nextFreeLocked returns the lane's next user with no exchange in flight.
func (l *lane) nextFreeLocked() *ua {
	for range l.users {
		u := l.users[l.cursor]
		l.cursor++
		if l.cursor == len(l.users) {
			l.cursor = 0
		}
		if !u.busy && !(l.e.cfg.once && u.gen > 0) {
			return u
		}
	}
	return nil
}

// readerState is owned by one lane's reader goroutine.
type readerState struct {
	resp    response
	scratch []byte
	dig     []byte
	cnonce  []byte
}

// outbox collects the messages one goroutine has to send on a lane, so they
// leave in one system call: one sendmmsg for UDP, one write for TCP.
type outbox struct {
	bufs   [][]byte       // UDP: one buffer per datagram (reused)
	msgs   []ipv4.Message // UDP: sendmmsg vector over bufs
	stream []byte         // TCP: the messages back to back
	owners []owner
}

// owner is the exchange a queued message belongs to (failed if the send fails).
type owner struct {
	u   *ua
	gen uint32
}

const batchSize = 32

func newOutbox() *outbox {
	o := &outbox{bufs: make([][]byte, batchSize), msgs: make([]ipv4.Message, batchSize), owners: make([]owner, 0, batchSize)}
	for i := range o.bufs {
		o.bufs[i] = make([]byte, 0, 2048)
		o.msgs[i].Buffers = make([][]byte, 1)
	}
	return o
}

// next returns the buffer to build the next message in (UDP), or the
// stream to append it to (TCP).
func (o *outbox) next(tcp bool) []byte {
	if tcp {
		return o.stream
	}
	return o.bufs[len(o.owners)][:0]
}

// add records the message built in buf for (u, gen).
func (o *outbox) add(tcp bool, buf []byte, u *ua, gen uint32) {
	if tcp {
		o.stream = buf
	} else {
		o.bufs[len(o.owners)] = buf
	}
	o.owners = append(o.owners, owner{u, gen})
}

func (o *outbox) full() bool { return len(o.owners) == batchSize }

// flush sends everything queued on lane l and fails the exchanges whose
// message could not be sent.
func (o *outbox) flush(l *lane) {
	if len(o.owners) == 0 {
		return
	}
	sent := len(o.owners)
	var err error
	if l.tcp {
		l.wmu.Lock()
		_, err = l.conn.Write(o.stream)
		l.wmu.Unlock()
		if err != nil {
			sent = 0
		}
		o.stream = o.stream[:0]
	} else {
		sent, err = l.writeBatch(o.msgs[:len(o.owners)], o.bufs)
	}
	if err != nil {
		for _, ow := range o.owners[sent:] {
			l.failSend(ow.u, ow.gen)
		}
	}
	o.owners = o.owners[:0]
}

// writeBatch sends datagrams with sendmmsg, as many calls as it takes.
func (l *lane) writeBatch(msgs []ipv4.Message, bufs [][]byte) (int, error) {
	for i := range msgs {
		msgs[i].Buffers[0] = bufs[i]
	}
	sent := 0
	for sent < len(msgs) {
		n, err := l.pc.WriteBatch(msgs[sent:], 0)
		if err != nil {
			return sent, err
		}
		sent += n
	}
	return sent, nil
}

func (l *lane) failSend(u *ua, gen uint32) {
	if s := l.e.storm.Load(); s != nil { // a phone's retransmission (or Timer F) follows
		s.st.fail("send error")
		return
	}
	l.mu.Lock()
	if u.busy && u.gen == gen {
		l.finishLocked(u, l.e.now(), "send error")
	}
	l.mu.Unlock()
}

func (l *lane) read() {
	defer l.e.wg.Done()
	rs := &readerState{}
	out := newOutbox()
	if !l.tcp {
		l.readUDP(rs, out)
		return
	}
	buf := make([]byte, 256<<10)
	var f framer
	start, end := 0, 0
	for {
		if end == len(buf) {
			if start == 0 {
				l.e.cur.Load().fail("tcp: message too large")
				return
			}
			end = copy(buf, buf[start:end])
			start = 0
		}
		n, err := l.conn.Read(buf[end:])
		end += n
		if err != nil {
			if !l.e.closing.Load() {
				l.e.cur.Load().fail("tcp: connection closed by target")
			}
			return
		}
		f.buf = buf[start:end]
		for {
			msg, err := f.next()
			if err != nil {
				l.e.cur.Load().fail("tcp: " + err.Error())
				l.conn.Close()
				return
			}
			if msg == nil {
				break
			}
			l.handle(msg, rs, out)
			if out.full() {
				out.flush(l)
			}
		}
		out.flush(l)
		start = end - len(f.buf)
		if start == end {
			start, end = 0, 0
		}
	}
}

// readUDP reads datagrams in batches (recvmmsg), handles each and sends
// the resulting requests in one sendmmsg.
func (l *lane) readUDP(rs *readerState, out *outbox) {
	msgs := make([]ipv4.Message, batchSize)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 16<<10)}
	}
	for {
		n, err := l.pc.ReadBatch(msgs, 0)
		if err != nil {
			if l.e.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			l.e.readErrs.Add(1) // e.g. ICMP port unreachable on a connected socket
			continue
		}
		for i := 0; i < n; i++ {
			l.handle(msgs[i].Buffers[0][:msgs[i].N], rs, out)
		}
		out.flush(l)
	}
}

// handle processes one response: it answers a 401 with the authenticated
// REGISTER, or finishes the exchange (and in AFAP mode starts the lane's
// next one), all on the reader goroutine, so a registration costs no
// goroutine switches. What it has to send goes into out.
func (l *lane) handle(msg []byte, rs *readerState, out *outbox) {
	e := l.e
	r := &rs.resp
	if err := parseResponse(msg, r); err != nil {
		if errors.Is(err, errNotResponse) {
			e.cur.Load().late.Add(1) // a request from the target: not ours to answer
			return
		}
		e.cur.Load().fail(parseKind(err))
		return
	}
	idx, ok := userIndex(r.callID, e.runID)
	if !ok || idx >= len(e.users) || e.users[idx].lane != l || !eqFold(r.cseqMethod, "register") {
		e.cur.Load().late.Add(1)
		return
	}
	if e.storm.Load() != nil {
		u := e.users[idx]
		buf := out.next(l.tcp)
		l.mu.Lock()
		buf, send := l.stormHandleLocked(u, r, e.now(), buf, rs)
		if send {
			out.add(l.tcp, buf, u, u.gen)
		}
		l.mu.Unlock()
		return
	}
	if r.code < 200 {
		return
	}
	u := e.users[idx]
	now := e.now()
	buf := out.next(l.tcp)
	l.mu.Lock()
	if !u.busy || r.cseq != u.cseq {
		st := u.st
		l.mu.Unlock()
		if st == nil {
			st = e.cur.Load()
		}
		st.late.Add(1) // a retransmission, or the answer to a timed-out exchange
		return
	}
	var sendFor *ua
	finished := false
	switch {
	case u.phase == 1 && (r.code == 401 || r.code == 407):
		c := r.pick(e.cfg.algorithm)
		if c == nil {
			l.finishLocked(u, now, strconv.Itoa(r.code)+" without a usable "+e.cfg.algorithm+" challenge")
			finished = true
			break
		}
		buf = l.authRegister(buf, u, c, rs)
		sendFor = u
	case u.phase == 2 && r.code >= 200 && r.code < 300:
		l.finishLocked(u, now, "")
		finished = true
	default:
		l.finishLocked(u, now, statusKind(r.code, u.phase, r.retryAfter))
		finished = true
	}
	if finished && e.afap.Load() && e.mayStart() {
		if n := l.nextFreeLocked(); n != nil {
			buf = l.startLocked(n, now, e.cur.Load(), buf)
			sendFor = n
		}
	}
	if sendFor != nil {
		out.add(l.tcp, buf, sendFor, sendFor.gen)
	}
	l.mu.Unlock()
}

// authRegister appends u's authenticated REGISTER answering challenge c
// (the next CSeq, phase 2); the caller holds l.mu and owns rs.
func (l *lane) authRegister(buf []byte, u *ua, c *challenge, rs *readerState) []byte {
	e := l.e
	a := authParams{username: u.name, realm: c.realm, nonce: c.nonce, uri: u.uri,
		opaque: c.opaque, algorithm: c.algorithm, qop: c.qopAuth, nc: ncOne}
	if u.ha1 == nil || u.ha1Realm != string(c.realm) {
		u.ha1Realm = string(c.realm)
		u.ha1 = ha1(e.cfg.algorithm, u.name, u.ha1Realm, u.password)
	}
	var qop []byte
	if a.qop {
		l.rng ^= l.rng << 13
		l.rng ^= l.rng >> 7
		l.rng ^= l.rng << 17
		rs.cnonce = strconv.AppendUint(rs.cnonce[:0], l.rng, 16)
		a.cnonce = rs.cnonce
		qop = qopAuth
	}
	rs.dig, rs.scratch = digestResponse(rs.dig[:0], rs.scratch, e.cfg.algorithm, u.ha1, c.nonce, a.nc, a.cnonce, qop, u.ha2)
	a.response = rs.dig
	u.phase = 2
	u.cseq++
	return appendRegister(buf, &l.p, u, u.cseq, u.gen, e.cfg.freshCallID, &a)
}

var (
	ncOne   = []byte("00000001") // every challenge is fresh, so nc is always 1
	qopAuth = []byte("auth")
)

func statusKind(code int, phase uint8, retryAfter bool) string {
	s := strconv.Itoa(code)
	if retryAfter {
		s += " with Retry-After"
	}
	if phase == 1 {
		return s + " to the first REGISTER"
	}
	if code == 401 || code == 407 {
		return s + " to the authenticated REGISTER (bad password?)"
	}
	return s + " to the authenticated REGISTER"
}

// expire fails exchanges past their deadline. Deadlines are in start order,
// so the FIFO's head is always the earliest.
func (l *lane) expire(now int64, buf []byte) []byte {
	e := l.e
	for {
		l.mu.Lock()
		if l.head == len(l.fifo) || l.fifo[l.head].deadline > now {
			if l.head > 4096 && l.head*2 > len(l.fifo) {
				l.fifo = append(l.fifo[:0], l.fifo[l.head:]...)
				l.head = 0
			}
			l.mu.Unlock()
			return buf
		}
		p := l.fifo[l.head]
		l.fifo[l.head] = pending{}
		l.head++
		if !p.u.busy || p.u.gen != p.gen {
			l.mu.Unlock()
			continue
		}
		kind := "timeout waiting for 401"
		if p.u.phase == 2 {
			kind = "timeout waiting for 200"
		}
		l.finishLocked(p.u, now, kind)
		var next *ua
		if e.afap.Load() && e.mayStart() {
			if next = l.nextFreeLocked(); next != nil {
				buf = l.startLocked(next, now, e.cur.Load(), buf[:0])
			}
		}
		var gen uint32
		if next != nil {
			gen = next.gen
		}
		l.mu.Unlock()
		if next != nil {
			l.send(buf, next, gen)
		}
	}
}

// sweep runs expire on every lane until ctx ends.
func (e *engine) sweep(ctx context.Context) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	buf := make([]byte, 0, 2048)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := e.now()
		for _, l := range e.lanes {
			buf = l.expire(now, buf)
		}
	}
}

// mayStart reports whether AFAP mode may start one more exchange, and takes
// it from the budget if there is one.
func (e *engine) mayStart() bool {
	if !e.running.Load() {
		return false
	}
	if e.limited.Load() && e.budget.Add(-1) < 0 {
		return false
	}
	return true
}

// kick starts each lane's share of the outstanding exchanges (AFAP mode).
func (e *engine) kick() {
	total := e.cfg.concurrency
	buf := make([]byte, 0, 2048)
	for i, l := range e.lanes {
		share := total / len(e.lanes)
		if i < total%len(e.lanes) {
			share++
		}
		for j := 0; j < share && e.mayStart(); j++ {
			now := e.now()
			l.mu.Lock()
			u := l.nextFreeLocked()
			if u == nil {
				l.mu.Unlock()
				break
			}
			buf = l.startLocked(u, now, e.cur.Load(), buf[:0])
			gen := u.gen
			l.mu.Unlock()
			l.send(buf, u, gen)
		}
	}
}

// pace starts exchanges at rate per second until ctx ends, round robin over
// all users. A user still busy is skipped (counted); if the pacer falls more
// than 100 ms behind its schedule the missed starts are counted as skipped
// ("generator behind"), which marks a result as limited by the generator.
func (e *engine) pace(ctx context.Context, rate float64) {
	if rate <= 0 {
		return
	}
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	boxes := make([]*outbox, len(e.lanes))
	for i := range boxes {
		boxes[i] = newOutbox()
	}
	t0 := time.Now()
	var sent uint64
	maxLag := uint64(rate*0.1) + 10
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := e.cur.Load()
		el := time.Since(t0)
		due := uint64(rate * el.Seconds())
		if lag := int64(el) - int64(float64(sent)/rate*1e9); lag > st.maxLag.Load() {
			st.maxLag.Store(lag)
		}
		if due > sent+maxLag {
			st.skip(behindKind, due-sent-maxLag)
			sent = due - maxLag
		}
		for ; sent < due; sent++ {
			if ctx.Err() != nil {
				break
			}
			if c := e.cfg.concurrency; c > 0 && e.inflight.Load() >= int64(c) {
				st.skip("outstanding cap (-concurrency) reached", 1)
				continue
			}
			started := false
			for try := 0; try < 8 && !started; try++ {
				u := e.users[e.cursor]
				e.cursor++
				if e.cursor == len(e.users) {
					e.cursor = 0
				}
				l := u.lane
				box := boxes[l.id]
				now := e.now()
				buf := box.next(l.tcp)
				l.mu.Lock()
				if u.busy {
					l.mu.Unlock()
					continue
				}
				buf = l.startLocked(u, now, st, buf)
				box.add(l.tcp, buf, u, u.gen)
				l.mu.Unlock()
				if box.full() {
					box.flush(l)
				}
				started = true
			}
			if !started {
				st.skip("users still busy (too few users for the rate)", 1)
			}
		}
		for i, box := range boxes {
			box.flush(e.lanes[i])
		}
	}
}

// drain stops new exchanges and waits until none is in flight (or the
// timeout plus a margin has passed: the sweeper fails the stragglers).
func (e *engine) drain() {
	e.running.Store(false)
	deadline := time.Now().Add(e.cfg.timeout + time.Second)
	for e.inflight.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
}

// udpDrops is the number of datagrams the kernel dropped on this engine's
// UDP sockets (the drops column of /proc/net/udp), 0 over TCP.
func (e *engine) udpDrops() uint64 {
	if e.cfg.transport != "udp" {
		return 0
	}
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return 0
	}
	ports := map[string]bool{}
	for _, l := range e.lanes {
		if a, ok := l.conn.LocalAddr().(*net.UDPAddr); ok {
			ports[fmt.Sprintf(":%04X", a.Port)] = true
		}
	}
	return sumDrops(b, ports)
}

// sumDrops adds the drops (last column) of the /proc/net/udp lines whose
// local address ends in one of ports (":HHHH").
func sumDrops(b []byte, ports map[string]bool) uint64 {
	var n uint64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 13 || len(f[1]) < 5 || !ports[f[1][len(f[1])-5:]] {
			continue
		}
		if d, err := strconv.ParseUint(f[len(f)-1], 10, 64); err == nil {
			n += d
		}
	}
	return n
}
