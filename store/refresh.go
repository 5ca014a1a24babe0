package store

import (
	"errors"
	"strings"
	"sync"
	"time"
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
//     per AOR. A refresh holds it across its check, so a REGISTER that
//     changes the AOR either committed before the check (and the check read
//     it) or reads the refresh's entry in its own transaction; while one is
//     in flight for the AOR, refreshes of that AOR take the slow path.
//
// Lock order: gate, then bbolt's writer lock, then mu; mu is never held
// while waiting for the writer.
type refreshOverlay struct {
	gate sync.RWMutex
	mu   sync.Mutex
	aors map[string]*aorOverlay // "acct/user" → pending state
	n    int                    // entries in aors
	// timer is armed when the first entry waits; when it fires the commit
	// loop flushes every waiting entry.
	timer *time.Timer
	delay time.Duration // < 0: no overlay, every refresh written at once
}

type aorOverlay struct {
	inflight int                     // group-committed REGISTERs of the AOR not yet finished
	entries  map[string]refreshEntry // Binding.key() → newest acknowledged refresh
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
		if e, ok := st.entries[b.key()]; ok && e.appliesTo(b) {
			e.applyTo(b)
		}
	}
}

// apply is applyLocked for every binding in bs, of the AOR "acct/user".
func (o *refreshOverlay) apply(aor string, bs []Binding) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.aors) == 0 {
		return
	}
	for i := range bs {
		o.applyLocked(aor, &bs[i])
	}
}

// applyOne is apply for a binding whose AOR is its own.
func (o *refreshOverlay) applyOne(b *Binding) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.aors) > 0 {
		o.applyLocked(k(b.AccountID, b.UserID), b)
	}
}

// begin and end bracket a group-committed REGISTER of the AOR.
func (o *refreshOverlay) begin(aor string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := o.aors[aor]
	if st == nil {
		st = &aorOverlay{}
		o.aors[aor] = st
	}
	st.inflight++
}

func (o *refreshOverlay) end(aor string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := o.aors[aor]
	st.inflight--
	if st.inflight == 0 && len(st.entries) == 0 {
		delete(o.aors, aor)
	}
}

// tryRefresh answers r without a write if it is a pure refresh (see above);
// ok false means Register must take the slow path, which also gives every
// error its proper answer.
func (db *DB) tryRefresh(r RegisterRequest) (out []Binding, ok bool) {
	o := &db.refresh
	if o.delay < 0 || r.RemoveAll || len(r.Contacts) == 0 {
		return nil, false
	}
	for _, c := range r.Contacts {
		if c.Expires <= 0 {
			return nil, false
		}
	}
	aor := k(r.AccountID, r.UserID)
	transport := strings.ToLower(r.Transport)
	o.gate.RLock()
	defer o.gate.RUnlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	st := o.aors[aor]
	if st != nil && st.inflight > 0 {
		return nil, false
	}
	var now time.Time
	var olds []Binding
	err := db.view(func(t *tx) error {
		now = t.now
		u, err := t.user(r.AccountID, r.UserID)
		if err != nil || u.Status != StatusEnabled {
			return errSlowPath
		}
		current := map[string]Binding{}
		if err := each(t.Bucket(bBindings), aor, func(_, v []byte) error {
			var b Binding
			if err := decodeBinding(v, &b); err != nil {
				return err
			}
			o.applyLocked(aor, &b)
			if b.Live(t.now) {
				current[b.key()] = b
			}
			return nil
		}); err != nil {
			return err
		}
		for _, c := range r.Contacts {
			key := Binding{Contact: c.URI, InstanceID: c.InstanceID}.key()
			b, exists := current[key]
			if !exists || b.Contact != c.URI || b.Q != c.Q || b.Source != r.Source || b.Transport != transport ||
				b.UserAgent != r.UserAgent || b.CallID != r.CallID || r.CSeq <= b.CSeq {
				return errSlowPath
			}
			olds = append(olds, b)
			b.CSeq, b.UpdatedAt, b.ExpiresAt = r.CSeq, t.now, t.now.Add(time.Duration(c.Expires)*time.Second)
			current[key] = b
		}
		out = sortedBindings(current)
		return nil
	})
	if err != nil {
		return nil, false
	}
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
			o.n++
		}
		st.entries[old.key()] = e
		changes = append(changes, bindingChange{expires: old.ExpiresAt.UnixNano(), delta: -1}, bindingChange{expires: e.expires.UnixNano(), delta: +1})
	}
	db.live.apply(changes, now)
	o.armTimerLocked(db.loop.flushDue)
	return out, true
}

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
	if o.n == 0 {
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
		st := o.aors[aor]
		if st == nil {
			continue
		}
		for key, e := range entries {
			if cur, ok := st.entries[key]; ok && cur == e {
				delete(st.entries, key)
				o.n--
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
	if o.timer == nil && o.n > 0 {
		o.timer = time.AfterFunc(o.delay, due)
	}
}
