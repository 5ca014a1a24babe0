package store

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	berrors "go.etcd.io/bbolt/errors"
)

// A pure refresh is a REGISTER whose only change is the expiry: for each of
// its contacts the AOR already has a live binding with the same contact,
// instance, q, source, transport, Call-ID and user agent, and the CSeq is
// higher. It is answered before its new expiry is on disk (docs/design.md,
// "The durability contract"): Register records it in the refreshOverlay, and
// the commit loop writes it within Options.RefreshWriteDelay. Every other
// REGISTER is on disk before Register returns.
//
// The overlay is part of the authoritative state: every read of bindings
// (Register, Bindings, the deletion check, PruneExpired, the live count)
// applies it. A crash loses at most the overlay, which leaves each binding
// with the previous expiry it has on disk: never a lost binding, and never a
// removed one back, because an entry only ever changes the one row it was
// checked against (the same rev, see Binding.rev) and never creates one.
//
// Ordering:
//   - gate: a refresh holds it shared while it checks and records; every
//     update transaction (DeleteUser, DisableUser, SignOut, PruneExpired, …)
//     holds it exclusively until its commit, so "no deletion while
//     registered" and "a disabled user cannot refresh" are exactly as strong
//     as when every refresh went through the writer.
//   - mu: the entries, and the group-committed REGISTERs queued or in flight
//     per AOR. A refresh reads the AOR, then checks and records under mu
//     only if no such REGISTER (nor a flush) began meanwhile; so a REGISTER
//     that changes the AOR either committed before the read or reads the
//     refresh's entry in its own transaction. While one is in flight for the
//     AOR, refreshes of that AOR take the slow path.
//
// Lock order: gate, then bbolt's writer lock, then mu; mu is never held
// while waiting for the writer.
//
// Held (etcd): the entries are this node's memory of the true expiry of the
// binding rows it owns (Binding.Node is this node), and they are never
// flushed. A row in etcd stores as ExpiresAt a horizon: the true expiry
// plus horizonPeriods registration periods, written when a REGISTER changes
// the row. A pure refresh is answered from memory, without an etcd write,
// while its new expiry stays at least one registration period before the
// stored horizon; one that comes closer takes the slow path, which writes
// the row with a new horizon. So at every moment stored horizon ≥ true
// expiry + one period: a node that is not the owner, reading the row, never
// finds it expired while the owner holds it live (its DeleteUser is
// refused, its prune keeps it), even with a clock up to a period ahead of
// the owner's, and the expires_at it shows is an upper bound. The owner
// applies its entries to what it reads (its own DeleteUser, listings and
// 200 OK use the true expiry), and its sweep (PruneExpired) deletes a row
// at the true expiry. If the owner dies, the row vanishes with its lease
// (etcdlease.go); a graceful Close first writes the true expiries
// (settleRows). An entry applies to a row of this node with the same rev,
// Call-ID and a CSeq not newer than its own.
type refreshOverlay struct {
	gate sync.RWMutex
	mu   sync.Mutex
	aors map[string]*aorOverlay // "acct/user" → pending state
	// hints: hintKey → fingerprint (see hintedLocked). Both are hashes:
	// 16 bytes a binding instead of the binding's key as a string.
	hints map[uint64]uint64
	n     atomic.Int64 // entries in aors; changed under mu, read without it
	// changes counts, per slot of AORs (aorSlot), the group-committed
	// REGISTERs begun and the flushes done: a refresh that read the AOR
	// while it moved takes the slow path.
	changes [changeSlots]uint64
	// timer is armed when the first entry waits; when it fires the commit
	// loop flushes every waiting entry.
	timer *time.Timer
	delay time.Duration // < 0: no overlay, every refresh written at once
	held  bool          // etcd: entries are kept, never flushed (see above)
	node  string        // held: this node's id (Binding.Node of its rows)
	// rows (held): "acct/user" → the rows of the AOR as this node last put
	// them, to move them to a new lease or put them back if etcd deleted
	// them with a lost lease (etcdlease.go). Under mu.
	rows map[string]*heldAOR
}

// heldAOR is what this node put in one AOR: its rows, and the etcd revision
// at which they were all as this node knows them (its last write to the
// AOR, or the read that adopted them).
type heldAOR struct {
	rev  int64
	rows map[string]heldRow // Binding.key() → the row
}

// heldAORLocked is the AOR's record, created if needed; mu held.
func (o *refreshOverlay) heldAORLocked(aor string) *heldAOR {
	h := o.rows[aor]
	if h == nil {
		h = &heldAOR{rows: map[string]heldRow{}}
		o.rows[aor] = h
	}
	return h
}

// horizonPeriods is how many registration periods past its true expiry a
// held row's stored expiry lies when written (see refreshOverlay): a phone
// refreshing at half its expiry costs one etcd write every
// 2·horizonPeriods−1 REGISTERs (19: 0.053 a REGISTER).
const horizonPeriods = 10

// horizon is the expiry stored for a row written at now for expires.
func horizon(now time.Time, expires time.Duration) time.Time {
	return now.Add(expires * (1 + horizonPeriods))
}

type aorOverlay struct {
	inflight int                     // group-committed REGISTERs of the AOR not yet finished
	entries  map[string]refreshEntry // Binding.key() → newest acknowledged refresh
}

// heldRow is one row of this node as stored, and its stored expiry.
type heldRow struct {
	val   []byte
	until time.Time
}

// heldWrite is a row a REGISTER wrote on etcd: with its true expiry, and as
// stored.
type heldWrite struct {
	b   Binding
	val []byte
}

// heldWrites are the rows one REGISTER wrote on etcd, and the revision of
// its commit.
type heldWrites struct {
	rows []heldWrite
	rev  int64
}

// refreshEntry is an acknowledged refresh of one binding row. It applies to
// the row while the row is the one it was checked against (rev, Call-ID) and
// its CSeq is older than the entry's.
type refreshEntry struct {
	rev     uint64
	callID  string
	cseq    uint32
	expires time.Time
	updated time.Time
}

func (e refreshEntry) appliesTo(b *Binding) bool {
	return e.rev == b.rev && e.callID == b.CallID && e.cseq > b.CSeq
}

func (e refreshEntry) applyTo(b *Binding) {
	b.CSeq, b.ExpiresAt, b.UpdatedAt = e.cseq, e.expires, e.updated
}

// applyLocked gives b its acknowledged expiry; mu held.
func (o *refreshOverlay) applyLocked(aor string, b *Binding) {
	if st := o.aors[aor]; st != nil {
		if e, ok := st.entries[b.key()]; ok && (e.appliesTo(b) || o.held && e.heldAppliesTo(b, o.node)) {
			e.applyTo(b)
		}
	}
}

// heldAppliesTo: a held entry is the true state of the row written with
// it (same CSeq) and of every later refresh of it.
func (e refreshEntry) heldAppliesTo(b *Binding, node string) bool {
	return e.rev == b.rev && e.callID == b.CallID && e.cseq >= b.CSeq && b.Node == node
}

// apply is applyLocked for every binding in bs, of the AOR "acct/user".
func (o *refreshOverlay) apply(aor string, bs []Binding) {
	if o.n.Load() == 0 {
		return // nothing pending: no lock
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range bs {
		o.applyLocked(aor, &bs[i])
	}
}

// applyOne is apply for a binding whose AOR is its own.
func (o *refreshOverlay) applyOne(b *Binding) {
	if o.n.Load() == 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.applyLocked(k(b.AccountID, b.UserID), b)
}

// begin and end bracket a group-committed REGISTER of the AOR.
func (o *refreshOverlay) begin(aor string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.beginLocked(aor)
}

func (o *refreshOverlay) beginLocked(aor string) {
	st := o.aors[aor]
	if st == nil {
		st = &aorOverlay{}
		o.aors[aor] = st
	}
	st.inflight++
	o.changes[aorSlot(aor)]++
}

// end also records the bindings the REGISTER left (see hintedLocked), if it
// succeeded; held, it remembers the true expiry of the rows it wrote and
// forgets the entries of the rows it removed.
func (o *refreshOverlay) end(aor string, left []Binding, wrote []heldWrite, rev int64, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if ok {
		o.hintedLocked(aor, left)
	}
	st := o.aors[aor]
	if ok && o.held {
		if st.entries == nil {
			st.entries = map[string]refreshEntry{}
		}
		h := o.heldAORLocked(aor)
		h.rev = max(h.rev, rev)
		rows := h.rows
		keep := make(map[string]bool, len(left))
		for _, b := range left {
			keep[b.key()] = true
		}
		for key := range st.entries {
			if !keep[key] {
				delete(st.entries, key)
				o.n.Add(-1)
			}
		}
		for key := range rows {
			if !keep[key] {
				delete(rows, key)
			}
		}
		for _, w := range wrote {
			b := w.b
			if _, had := st.entries[b.key()]; !had {
				o.n.Add(1)
			}
			st.entries[b.key()] = refreshEntry{rev: b.rev, callID: b.CallID, cseq: b.CSeq, expires: b.ExpiresAt, updated: b.UpdatedAt}
			rows[b.key()] = heldRow{val: w.val, until: horizon(b.UpdatedAt, b.ExpiresAt.Sub(b.UpdatedAt))}
		}
		if len(rows) == 0 {
			delete(o.rows, aor)
		}
	}
	st.inflight--
	if st.inflight == 0 && len(st.entries) == 0 {
		delete(o.aors, aor)
	}
}

// tryRefresh answers r without a write if it is a pure refresh (see above);
// ok false means Register must take the slow path, which also gives every
// error its proper answer.
//
// It reads the user and the AOR's rows without holding mu, then checks under
// mu that no group-committed REGISTER of the AOR and no flush began since
// (changes counts both): if one did, what it read may be stale and Register
// takes the slow path.
func (db *DB) tryRefresh(r RegisterRequest) (out []Binding, ok, begun bool) {
	o := &db.refresh
	if o.delay < 0 || r.RemoveAll || len(r.Contacts) == 0 {
		return nil, false, false
	}
	if o.held && db.etcd.lease.Load() == 0 {
		return nil, false, false // no lease: the slow path says so
	}
	for _, c := range r.Contacts {
		if c.Expires <= 0 {
			return nil, false, false
		}
	}
	aor := k(r.AccountID, r.UserID)
	slot := aorSlot(aor)
	transport := strings.ToLower(r.Transport)
	o.gate.RLock()
	defer o.gate.RUnlock()
	o.mu.Lock()
	if st := o.aors[aor]; st != nil && st.inflight > 0 {
		o.beginLocked(aor)
		o.mu.Unlock()
		return nil, false, true
	}
	seen := o.changes[slot]
	for _, c := range r.Contacts {
		if o.hints[hintKey(aor, c.URI, c.InstanceID)] != fingerprint(c.URI, c.Q, r.Source, transport, r.UserAgent, r.CallID) {
			// Not a binding this process wrote as it is: no read needed.
			o.beginLocked(aor)
			o.mu.Unlock()
			return nil, false, true
		}
	}
	o.mu.Unlock()

	var now time.Time
	var rows []Binding
	err := db.viewLocal(func(t *tx) error {
		now = t.now
		u, err := t.user(r.AccountID, r.UserID)
		if err != nil || u.Status != StatusEnabled {
			return errSlowPath
		}
		return each(t.Bucket(bBindings), aor, func(_, v []byte) error {
			var b Binding
			if err := decodeBinding(v, &b); err != nil {
				return err
			}
			rows = append(rows, b)
			return nil
		})
	})
	if err != nil {
		return nil, false, false
	}

	o.mu.Lock()
	defer o.mu.Unlock()
	if o.changes[slot] != seen {
		return nil, false, false
	}
	current := make(map[string]Binding, len(rows))
	var stored map[string]time.Time // held: each row's horizon
	if o.held {
		stored = make(map[string]time.Time, len(rows))
	}
	for _, b := range rows {
		if o.held {
			stored[b.key()] = b.ExpiresAt
		}
		o.applyLocked(aor, &b)
		if b.Live(now) {
			current[b.key()] = b
		}
	}
	olds := make([]Binding, 0, len(r.Contacts))
	for _, c := range r.Contacts {
		key := Binding{Contact: c.URI, InstanceID: c.InstanceID}.key()
		b, exists := current[key]
		if !exists || b.Contact != c.URI || b.Q != c.Q || b.Source != r.Source || b.Transport != transport || b.Node != db.node ||
			b.UserAgent != r.UserAgent || b.CallID != r.CallID || r.CSeq <= b.CSeq {
			return nil, false, false
		}
		if o.held && now.Add(2*time.Duration(c.Expires)*time.Second).After(stored[key]) {
			return nil, false, false // within a period of the horizon: written with a new one
		}
		olds = append(olds, b)
		b.CSeq, b.UpdatedAt, b.ExpiresAt = r.CSeq, now, now.Add(time.Duration(c.Expires)*time.Second)
		current[key] = b
	}
	st := o.aors[aor]
	if st == nil {
		st = &aorOverlay{}
		o.aors[aor] = st
	}
	if st.entries == nil {
		st.entries = map[string]refreshEntry{}
	}
	changes := make([]bindingChange, 0, 2*len(olds))
	for i, c := range r.Contacts {
		old := olds[i]
		e := refreshEntry{rev: old.rev, callID: r.CallID, cseq: r.CSeq, updated: now, expires: now.Add(time.Duration(c.Expires) * time.Second)}
		if _, had := st.entries[old.key()]; !had {
			o.n.Add(1)
		}
		st.entries[old.key()] = e
		changes = append(changes, bindingChange{expires: old.ExpiresAt.UnixNano(), delta: -1}, bindingChange{expires: e.expires.UnixNano(), delta: +1})
	}
	db.live.apply(changes, now)
	if !o.held {
		o.armTimerLocked(db.loop.flushDue)
	}
	out = sortedBindings(current)
	db.sweep.lower(aor, out)
	return out, true, false
}

// hintedLocked records the bindings a group-committed REGISTER left in the AOR,
// so that tryRefresh reads the store only for a REGISTER that may be a pure
// refresh of one of them. A hint is only a hint: a stale one costs a read.
func (o *refreshOverlay) hintedLocked(aor string, bs []Binding) {
	if len(o.hints) >= maxHints {
		o.hints = map[uint64]uint64{}
	}
	for _, b := range bs {
		o.hints[hintKey(aor, b.Contact, b.InstanceID)] = fingerprint(b.Contact, b.Q, b.Source, b.Transport, b.UserAgent, b.CallID)
	}
}

const maxHints = 1 << 20

// adopted records a row of this node found in etcd (at a restart, or
// after a new lease): a hint for its refreshes, and the row as stored.
// Not held (every refresh written), the node keeps no memory of its rows.
func (o *refreshOverlay) adopted(b Binding, val []byte, rev int64) {
	if !o.held {
		return
	}
	aor := k(b.AccountID, b.UserID)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.hintedLocked(aor, []Binding{b})
	h := o.heldAORLocked(aor)
	h.rev = max(h.rev, rev)
	h.rows[b.key()] = heldRow{val: val, until: b.ExpiresAt}
}

// forgetExpired drops the held entries of the AORs a sweep read that
// expired at or before now (their rows are gone, or are no longer this
// node's: another node rewrote or deleted them).
func (o *refreshOverlay) forgetExpired(aors map[string]int64, now time.Time) {
	if !o.held {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for aor := range aors {
		var rows map[string]heldRow
		if h := o.rows[aor]; h != nil {
			rows = h.rows
		}
		if st := o.aors[aor]; st != nil {
			for key, e := range st.entries {
				if !e.expires.After(now) {
					delete(st.entries, key)
					delete(rows, key)
					o.n.Add(-1)
				}
			}
			if st.inflight == 0 && len(st.entries) == 0 {
				delete(o.aors, aor)
			}
		}
		for key, r := range rows {
			if !r.until.After(now) {
				delete(rows, key) // adopted, never refreshed, past its stored expiry
			}
		}
		if len(rows) == 0 {
			delete(o.rows, aor)
		}
	}
}

// forgetAORs forgets all held memory of aors, in which a sweep reading at
// revision rev found no row of this node (another node signed the phones
// out, or rewrote their rows): unless this node wrote to one since, or a
// REGISTER of it is in flight. Without this, the memory of a row removed
// before its expiry outlived it: the sweep no longer reads an AOR without
// rows, so forgetExpired never saw it again.
func (o *refreshOverlay) forgetAORs(aors []string, rev int64) {
	if !o.held || len(aors) == 0 || rev == 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, aor := range aors {
		if h := o.rows[aor]; h != nil && h.rev > rev {
			continue
		}
		st := o.aors[aor]
		if st != nil && st.inflight > 0 {
			continue
		}
		delete(o.rows, aor)
		if st != nil {
			o.n.Add(-int64(len(st.entries)))
			delete(o.aors, aor)
		}
	}
}

// hintKey hashes the AOR and the binding's key (Binding.key). Two bindings
// with one hash share a hint: the second overwrites the first, whose next
// refresh then reads the store, like any binding without a hint.
func hintKey(aor, contact, instance string) uint64 {
	if instance != "" {
		return fingerprint(aor, "i:", instance)
	}
	return fingerprint(aor, "c:", contact)
}

// fingerprint is FNV-1a over what a pure refresh must repeat.
func fingerprint(parts ...string) uint64 {
	h := uint64(14695981039346656037)
	for _, p := range parts {
		for i := 0; i < len(p); i++ {
			h ^= uint64(p[i])
			h *= 1099511628211
		}
		h ^= 0xff
		h *= 1099511628211
	}
	return h | 1 // never 0, the value of a missing hint
}

// aorSlot spreads AORs over refreshOverlay.changes (FNV-1a).
func aorSlot(aor string) int {
	h := uint32(2166136261)
	for i := 0; i < len(aor); i++ {
		h ^= uint32(aor[i])
		h *= 16777619
	}
	return int(h % changeSlots)
}

const changeSlots = 1024

// errSlowPath ends tryRefresh's check: not a pure refresh.
var errSlowPath = errors.New("not a pure refresh")

// flushSnapshot takes the waiting entries for a flush; nil if none. It
// clears the flush timer: entries recorded from now on arm a new one.
func (o *refreshOverlay) flushSnapshot() map[string]map[string]refreshEntry {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.timer != nil {
		o.timer.Stop()
		o.timer = nil
	}
	if o.n.Load() == 0 {
		return nil
	}
	snap := make(map[string]map[string]refreshEntry, len(o.aors))
	for aor, st := range o.aors {
		if len(st.entries) == 0 {
			continue
		}
		m := make(map[string]refreshEntry, len(st.entries))
		for key, e := range st.entries {
			m[key] = e
		}
		snap[aor] = m
	}
	return snap
}

// flushFn writes the snapshot's entries into their rows (keeping each row's
// rev, so a newer entry still applies to it). Entries whose row has changed
// or gone are dropped by flushed. It never touches the live count: the
// overlay already counted the new expiries.
func flushFn(snap map[string]map[string]refreshEntry) func(*tx) error {
	return func(t *tx) error {
		b := t.Bucket(bBindings)
		for aor, entries := range snap {
			for key, e := range entries {
				rowKey := []byte(k(aor, key))
				v := b.Get(rowKey)
				if v == nil {
					continue
				}
				var row Binding
				if err := decodeBinding(v, &row); err != nil || !e.appliesTo(&row) {
					continue
				}
				e.applyTo(&row)
				if err := b.Put(rowKey, encodeBinding(&row)); err != nil {
					return err
				}
			}
		}
		return nil
	}
}

// flushed forgets the snapshot's entries once they are on disk, unless a
// newer refresh replaced one meanwhile.
func (o *refreshOverlay) flushed(snap map[string]map[string]refreshEntry) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for aor, entries := range snap {
		o.changes[aorSlot(aor)]++
		st := o.aors[aor]
		if st == nil {
			continue
		}
		for key, e := range entries {
			if cur, ok := st.entries[key]; ok && cur == e {
				delete(st.entries, key)
				o.n.Add(-1)
			}
		}
		if st.inflight == 0 && len(st.entries) == 0 {
			delete(o.aors, aor)
		}
	}
}

func (o *refreshOverlay) stopTimer() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.timer != nil {
		o.timer.Stop()
		o.timer = nil
	}
}

// armTimer makes sure a flush comes within the delay; mu not held.
func (o *refreshOverlay) armTimer(due func()) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.armTimerLocked(due)
}

func (o *refreshOverlay) armTimerLocked(due func()) {
	if o.timer == nil && o.n.Load() > 0 {
		o.timer = time.AfterFunc(o.delay, due)
	}
}

// flushRefreshes writes every pure refresh answered so far and waits for its
// commit, so what follows (a backup) holds everything acknowledged. Running
// it beside the loop's own timed flush is harmless: a flush writes each
// entry's expiry into its row, and an entry is forgotten only once the row
// holds it.
func (db *DB) flushRefreshes() error {
	snap := db.refresh.flushSnapshot()
	if snap == nil {
		return nil
	}
	c := &batchCall{fn: flushFn(snap), done: make(chan error, 1), committed: func() { db.refresh.flushed(snap) }}
	l := &db.loop
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return berrors.ErrDatabaseNotOpen
	}
	l.queue = append(l.queue, c)
	l.mu.Unlock()
	l.kick()
	err := <-c.done
	if err != nil {
		db.refresh.armTimer(l.flushDue) // try again later, as the loop does
	}
	return err
}
