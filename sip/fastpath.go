package sip

import (
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// The fast path: REGISTER and OPTIONS are handled without a sipgo server
// transaction. The front door (frontdoor.go) has already parsed the message
// to check it; that parse is kept and handed here, so the message is parsed
// once. The request then runs through the same guarded handler as sipgo's
// requests (server.go: metrics, closing and MaxInFlight → 503, checkRequest,
// guard, recover) and the same handlers (the endpoint's onOptions, the
// Registrar's onRegister); only the way the
// answer leaves differs: a fastResponder writes the response's bytes
// straight to the UDP socket (to the datagram's source: a symmetric
// response, as send does for sipgo) or to the TCP/TLS connection.
//
// What the transaction gave us, done here instead (RFC 3261 §17.2.2, the
// non-INVITE server transaction):
//
//   - over UDP, a retransmission (same top Via branch, Call-ID, CSeq and
//     source) gets the last final response again from a small bounded cache
//     for 64*T1 (Timer J); one that arrives while the first is still being
//     handled is absorbed. Streams do not retransmit (Timer J is 0 there).
//   - requests without credentials (the 401 leg, OPTIONS) need nothing but
//     memory and are answered on the reading goroutine; requests with
//     credentials look up the user and write the binding (a group commit that
//     waits for the disk), so they run on a bounded pool of workers and the
//     socket keeps being read meanwhile.
//
// Requests whose top Via has no RFC 3261 branch (magic cookie) stay on
// sipgo's path, as does every other method.

// retransTTL is how long a final response answers retransmissions: Timer J
// = 64*T1 (RFC 3261 §17.2.2).
const retransTTL = 64 * 500 * time.Millisecond

// retransEntries bounds the responses remembered, per half of the cache.
const retransEntries = 8192

// fastWorkerIdle is how long an idle worker waits for work before it ends.
const fastWorkerIdle = 10 * time.Second

// fastPath handles req, parsed by the front door from a message that came
// in over transport ("UDP", "TCP" or "TLS") from src, answering through w.
// It returns false when req must go to sipgo instead.
func (s *Server) fastPath(req *sip.Request, transport string, src net.Addr, w io.Writer) bool {
	if s.cfg.DisableFastPath || (req.Method != sip.REGISTER && req.Method != sip.OPTIONS) {
		return false
	}
	h := s.answerer(req.Method) // onOptions, the Registrar's onRegister
	if h == nil {
		return false // no component took it: sipgo's path answers 405
	}
	via := req.Via()
	if via == nil {
		return false
	}
	branch, _ := via.Params.Get("branch")
	if !strings.HasPrefix(branch, sip.RFC3261BranchMagicCookie) {
		return false
	}
	req.SetTransport(transport)
	req.SetSource(src.String())
	rs := &fastResponder{s: s, w: w, datagram: transport == "UDP"}
	if rs.datagram {
		if cseq, callID := req.CSeq(), req.CallID(); cseq != nil && callID != nil {
			rs.key = branch + "\x00" + callID.Value() + "\x00" + cseq.Value() + "\x00" + req.Source()
			if res, seen := s.retrans.begin(rs.key, time.Now()); seen {
				s.tm.retransmissions.Inc()
				if res != nil {
					rs.write(res)
				}
				return true
			}
		}
	}
	if req.GetHeader("Authorization") == nil {
		rs.run(req, h)
		return true
	}
	if !s.fastPool.submit(func() { rs.run(req, h) }) {
		// Every worker is busy: as many requests as MaxInFlight allows
		// are running, so guarded would refuse this one too.
		s.metrics.requests.WithLabelValues(methodLabel(req.Method)).Inc()
		s.metrics.overloaded.Inc()
		s.overload(req, rs)
		rs.settle()
	}
	return true
}

// fastResponder answers one fast-path request.
type fastResponder struct {
	s        *Server
	w        io.Writer
	datagram bool
	key      string // retransmission cache key ("" = none)
	answered bool   // a final response was cached
}

func (r *fastResponder) run(req *sip.Request, h func(*sip.Request, responder)) {
	r.s.guarded(req, r, h)
	r.settle()
}

// settle forgets a request that got no final response, so that its
// retransmissions are handled afresh instead of absorbed.
func (r *fastResponder) settle() {
	if r.key != "" && !r.answered {
		r.s.retrans.forget(r.key)
	}
}

var responseBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Respond writes res. Over UDP a final response is remembered for the
// request's retransmissions.
func (r *fastResponder) Respond(res *sip.Response) error {
	buf := responseBufs.Get().(*bytes.Buffer)
	defer responseBufs.Put(buf)
	buf.Reset()
	res.StringWrite(buf)
	b := buf.Bytes()
	if r.datagram && len(b) > sip.UDPMTUSize-200 {
		return sip.ErrUDPMTUCongestion // what sipgo's UDP connection refuses too
	}
	if r.key != "" && res.StatusCode >= 200 {
		r.s.retrans.finish(r.key, bytes.Clone(b), time.Now())
		r.answered = true
	}
	return r.write(b)
}

func (r *fastResponder) write(b []byte) error {
	_, err := r.w.Write(b)
	return err
}

// udpReply writes to one UDP source from the listening socket.
type udpReply struct {
	sock net.PacketConn
	to   net.Addr
}

func (u udpReply) Write(b []byte) (int, error) { return u.sock.WriteTo(b, u.to) }

// retransCache remembers the final response to each recent fast-path UDP
// request, in two halves of retransEntries: when the current half is full
// the older one is forgotten. An entry without a response marks a request
// still being handled.
type retransCache struct {
	mu        sync.Mutex
	cur, prev map[string]retransEntry
}

type retransEntry struct {
	res []byte // nil: not answered yet
	at  time.Time
}

func newRetransCache() *retransCache {
	return &retransCache{cur: map[string]retransEntry{}, prev: map[string]retransEntry{}}
}

// begin looks key up. seen reports a recent request with that key; res is
// its final response, nil while it is still being handled. When not seen,
// key is entered as being handled.
func (c *retransCache) begin(key string, now time.Time) (res []byte, seen bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.cur[key]
	if !ok {
		e, ok = c.prev[key]
	}
	if ok && now.Sub(e.at) < retransTTL {
		return e.res, true
	}
	if len(c.cur) >= retransEntries {
		c.prev, c.cur = c.cur, make(map[string]retransEntry, retransEntries)
	}
	c.cur[key] = retransEntry{at: now}
	return nil, false
}

// finish records the final response to key.
func (c *retransCache) finish(key string, res []byte, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.prev, key)
	c.cur[key] = retransEntry{res: res, at: now}
}

func (c *retransCache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.cur, key)
	delete(c.prev, key)
}

// workerPool runs jobs on at most max goroutines, reusing idle ones, and
// queues up to cap(queue) more: a job is handed to a waiting worker, or
// starts a new worker below max, or waits in the queue. Each running job
// is a goroutine blocked on the store's group commit (~16 KiB of stack); a
// queued one is only its request. So MaxInFlight requests are accepted
// with at most fastWorkers goroutines (BENCHMARKS.md "Storm memory").
type workerPool struct {
	work  chan func() // to an idle worker
	queue chan func() // when every worker is busy
	n     atomic.Int64
	max   int64
	quit  chan struct{}
	once  sync.Once
}

// fastWorkers bounds the goroutines of the fast path's pool; requests
// beyond it, up to MaxInFlight, wait in its queue. Every running REGISTER
// joins the same group commit, so a few hundred keep the disk as busy as
// thousands would.
const fastWorkers = 512

func newWorkerPool(maxInFlight int) *workerPool {
	workers := min(maxInFlight, fastWorkers)
	return &workerPool{work: make(chan func()), queue: make(chan func(), maxInFlight-workers),
		max: int64(workers), quit: make(chan struct{})}
}

// submit runs f on a worker; false when all max workers are busy and the
// queue is full.
func (p *workerPool) submit(f func()) bool {
	select {
	case p.work <- f:
		return true
	default:
	}
	if p.n.Add(1) <= p.max {
		go p.worker(f)
		return true
	}
	p.n.Add(-1)
	select {
	case p.queue <- f:
		return true
	default:
		return false
	}
}

func (p *workerPool) worker(f func()) {
	idle := time.NewTimer(fastWorkerIdle)
	defer idle.Stop()
	for {
		f()
		select {
		case f = <-p.queue:
			continue
		default:
		}
		idle.Reset(fastWorkerIdle)
		select {
		case f = <-p.work:
		case f = <-p.queue:
		case <-idle.C:
			f = nil
		case <-p.quit:
			f = nil
		}
		if f == nil {
			p.n.Add(-1)
			// A job queued while this worker was leaving (submit saw every
			// worker there) must not wait for the next submit.
			if len(p.queue) > 0 {
				if p.n.Add(1) <= p.max {
					go p.worker(func() {})
				} else {
					p.n.Add(-1)
				}
			}
			return
		}
	}
}

// stop ends idle workers; busy ones end after their job.
func (p *workerPool) stop() { p.once.Do(func() { close(p.quit) }) }
