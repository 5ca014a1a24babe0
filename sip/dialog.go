package sip

import (
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The dialog table: the only dialogs in which dialtone loose-routes
// requests are the ones it created itself, by proxying an INVITE that got a
// 1xx with a To-tag (early) or a 2xx (confirmed). Each is identified by
// Call-ID and both tags (RFC 3261 §12), and carries the two flows recorded
// when it was created: the caller's (where the INVITE came from) and the
// answering branch's (the binding the INVITE was sent to). Requests are only
// ever relayed between these two flows; nothing in a later request (Route,
// Request-URI, Contact) can point them elsewhere.

// DialogLimits bounds the dialog table (ProxyConfig.Dialogs, Proxy.SetDialogLimits). Zero
// values mean the defaults in brackets.
type DialogLimits struct {
	// Max is how many dialogs (early and confirmed) are remembered at once
	// [100,000]. At the cap a new call is refused with 503 before it rings.
	Max int
	// MaxAge is the hard cap on a dialog's life [12 h]: a call without BYE
	// is forgotten after it (its in-dialog requests then get 481).
	MaxAge time.Duration
	// Idle forgets a dialog in which nothing was relayed for this long
	// [MaxAge]. Phones without session timers send nothing during a call,
	// so keep it above the longest call you expect.
	Idle time.Duration
}

// SetDialogLimits replaces the dialog table's bounds (zero fields: the
// defaults). Dialogs already remembered stay until the new bounds expire
// them; safe for concurrent use.
func (p *Proxy) SetDialogLimits(l DialogLimits) {
	d := p.dialogs
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lim = l.withDefaults()
	d.lastPrune = time.Time{}
}

// Defaults of DialogLimits, and how long a confirmed dialog waits for its
// ACK (64×T1, RFC 3261 §13.3.1.4: the UAS gives up then too).
const (
	defaultMaxDialogs   = 100_000
	defaultDialogMaxAge = 12 * time.Hour
	dialogACKWait       = 32 * time.Second
	maxEndedDialogs     = 10_000
)

func (l DialogLimits) withDefaults() DialogLimits {
	if l.Max <= 0 {
		l.Max = defaultMaxDialogs
	}
	if l.MaxAge <= 0 {
		l.MaxAge = defaultDialogMaxAge
	}
	if l.Idle <= 0 || l.Idle > l.MaxAge {
		l.Idle = l.MaxAge
	}
	return l
}

// dialogKey identifies a dialog: Call-ID, the caller's From-tag and the
// answering phone's To-tag.
type dialogKey struct {
	callID, callerTag, calleeTag string
}

// flow is where a party's messages come from and go to: its source address
// and transport (upper case).
type flow struct {
	source    string
	transport string
	// node is set when the party is reached through another node (hop.go):
	// its id and announced address, dialled when the connection is gone.
	node, nodeAddr string
}

type dialog struct {
	caller, callee flow
	created, last  time.Time
	confirmed      bool // a 2xx created it; else a 1xx with a To-tag (early)
	acked          bool // the caller's ACK for the 2xx went through
	// The call's record, ended (talk time) when the BYE goes through.
	account string
	seq     uint64
}

// dialogs is the table of dialogs we created. Its clock is the store's.
type dialogs struct {
	mu        sync.Mutex
	m         map[dialogKey]*dialog
	ended     map[string]time.Time // by Call-ID: BYE seen before the call's record was written
	lim       DialogLimits
	now       func() time.Time
	lastPrune time.Time

	refused prometheus.Counter // in-dialog requests of no dialog of ours (481)
}

func newDialogs(lim DialogLimits, now func() time.Time) *dialogs {
	if now == nil {
		now = time.Now
	}
	return &dialogs{m: map[dialogKey]*dialog{}, lim: lim.withDefaults(), now: now,
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialtone_sip_in_dialog_refused_total",
			Help: "Requests (not counting ACKs) with our Route and a To-tag that matched no dialog of ours, or came from the wrong flow: answered 481, never forwarded.",
		})}
}

// collectors are the dialog table's metrics: the refusals and the size.
func (d *dialogs) collectors() []prometheus.Collector {
	return []prometheus.Collector{d.refused, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dialtone_sip_dialogs",
		Help: "Dialogs (early and confirmed) in the table through which in-dialog requests are routed.",
	}, func() float64 { return float64(d.len()) })}
}

// expired reports whether dl is to be forgotten at now.
func (d *dialogs) expired(dl *dialog, now time.Time) bool {
	return now.Sub(dl.created) > d.lim.MaxAge || now.Sub(dl.last) > d.lim.Idle ||
		dl.confirmed && !dl.acked && now.Sub(dl.created) > dialogACKWait
}

// pruneLocked forgets expired dialogs: at most once a minute, or whenever
// the table is full (force).
func (d *dialogs) pruneLocked(now time.Time, force bool) {
	if !force && now.Sub(d.lastPrune) < time.Minute {
		return
	}
	d.lastPrune = now
	for k, dl := range d.m {
		if d.expired(dl, now) {
			delete(d.m, k)
		}
	}
}

// roomLocked reports whether one more dialog fits, pruning if needed.
func (d *dialogs) roomLocked(now time.Time) bool {
	d.pruneLocked(now, false)
	if len(d.m) < d.lim.Max {
		return true
	}
	d.pruneLocked(now, true)
	return len(d.m) < d.lim.Max
}

// room reports whether a new call could get its dialog.
func (d *dialogs) room() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.roomLocked(d.now())
}

// early records the early dialog k (a 1xx with a To-tag) between the two
// flows, unless it is known already. It reports false when the table is
// full.
func (d *dialogs) early(k dialogKey, caller, callee flow) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.m[k]; ok {
		return true
	}
	now := d.now()
	if !d.roomLocked(now) {
		return false
	}
	d.m[k] = &dialog{caller: caller, callee: callee, created: now, last: now}
	return true
}

// confirm records the dialog k a 2xx created (or confirms its early
// dialog). It reports false when the table is full.
func (d *dialogs) confirm(k dialogKey, caller, callee flow) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	dl, ok := d.m[k]
	if !ok {
		if !d.roomLocked(now) {
			return false
		}
		dl = &dialog{caller: caller, callee: callee}
		d.m[k] = dl
	}
	dl.confirmed, dl.created, dl.last = true, now, now
	return true
}

// dropEarly forgets k if it is still an early dialog (its INVITE ended
// without this branch answering).
func (d *dialogs) dropEarly(k dialogKey) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if dl, ok := d.m[k]; ok && !dl.confirmed {
		delete(d.m, k)
	}
}

// dialogMatch is an in-dialog request matched to one of our dialogs.
type dialogMatch struct {
	key        dialogKey
	to         flow // the other party's flow: where the request goes
	fromCaller bool
}

// match finds the dialog of a request by Call-ID and tags in either
// direction (the caller sends From-tag = callerTag, To-tag = calleeTag; the
// callee the reverse), and checks that the request comes from the flow of
// the party it claims to be: same transport and same IP address (the port
// may change when a phone reconnects or its NAT rebinds). An ACK marks a
// confirmed dialog acknowledged. Expired dialogs do not match.
func (d *dialogs) match(callID, fromTag, toTag, source, transport string, ack bool) (dialogMatch, bool) {
	if toTag == "" || fromTag == "" {
		return dialogMatch{}, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	m := dialogMatch{key: dialogKey{callID, fromTag, toTag}, fromCaller: true}
	dl, ok := d.m[m.key]
	if !ok {
		m = dialogMatch{key: dialogKey{callID, toTag, fromTag}}
		if dl, ok = d.m[m.key]; !ok {
			return dialogMatch{}, false
		}
	}
	if d.expired(dl, now) {
		delete(d.m, m.key)
		return dialogMatch{}, false
	}
	from, to := dl.callee, dl.caller
	if m.fromCaller {
		from, to = dl.caller, dl.callee
	}
	if !sameFlowHost(from, source, transport) {
		return dialogMatch{}, false
	}
	if ack {
		if !m.fromCaller || !dl.confirmed {
			return dialogMatch{}, false // only the caller ACKs a 2xx
		}
		dl.acked = true
	}
	dl.last = now
	m.to = to
	return m, true
}

// sameFlowHost reports whether a request from source over transport comes
// from f's host over f's transport.
func sameFlowHost(f flow, source, transport string) bool {
	if !strings.EqualFold(f.transport, transport) {
		return false
	}
	return hostOf(f.source) == hostOf(source)
}

func hostOf(hostport string) string {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return strings.ToLower(hostport)
	}
	if ip := net.ParseIP(h); ip != nil {
		return ip.String()
	}
	return strings.ToLower(h)
}

// setRecord remembers which call record the dialog belongs to. The record
// is written (with an fsync) after the 2xx is relayed, so a quick caller's
// BYE can come first: then setRecord reports the time that BYE ended the
// call, for the caller to end the record with.
func (d *dialogs) setRecord(k dialogKey, account string, seq uint64) (endedAt time.Time, ended bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if dl, ok := d.m[k]; ok {
		dl.account, dl.seq = account, seq
		return time.Time{}, false
	}
	endedAt, ended = d.ended[k.callID]
	delete(d.ended, k.callID)
	return endedAt, ended
}

// end forgets the dialog at its BYE and returns its record, if known; if
// the record is not written yet, it keeps the end time for setRecord.
func (d *dialogs) end(k dialogKey, at time.Time) (account string, seq uint64, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dl, found := d.m[k]
	if !found {
		return "", 0, false
	}
	delete(d.m, k)
	if dl.seq == 0 {
		if dl.caller.node != "" {
			return "", 0, false // the node that passed us the call keeps its record
		}
		if d.ended == nil {
			d.ended = map[string]time.Time{}
		}
		if len(d.ended) >= maxEndedDialogs { // bounded: a record lost here only keeps its set-up time
			clear(d.ended)
		}
		d.ended[k.callID] = at
		return "", 0, false
	}
	return dl.account, dl.seq, true
}

func (d *dialogs) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.m)
}
