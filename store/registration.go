package store

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// Binding is one live registration: a contact of a user's address of record,
// with the flow it arrived on (source address and transport, for NAT).
type Binding struct {
	AccountID    string    `json:"account_id"`
	UserID       string    `json:"user_id"`
	Contact      string    `json:"contact"`     // contact URI, e.g. sip:1002@192.0.2.7:5062;transport=tcp
	InstanceID   string    `json:"instance_id"` // +sip.instance without quotes, if the phone sent one
	Q            string    `json:"q,omitempty"`
	Source       string    `json:"source"`    // ip:port the REGISTER came from
	Transport    string    `json:"transport"` // udp, tcp, tls, ws, wss
	UserAgent    string    `json:"user_agent"`
	MAC          string    `json:"mac,omitempty"` // 12 lower-case hex digits, from a Yealink User-Agent
	CallID       string    `json:"call_id"`
	CSeq         uint32    `json:"cseq"`
	RegisteredAt time.Time `json:"registered_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	// ExpiresAt is when the binding ends without a refresh. On etcd, read
	// through a node other than Node, it is an upper bound (the row's
	// stored horizon, up to 10 registration periods later); the owner
	// node knows the true expiry (see refreshOverlay).
	ExpiresAt time.Time `json:"expires_at"`
	// Node is the dialtone node that holds the phone's flow (its TCP/TLS
	// connection or UDP pinhole) in a deployment of several nodes on etcd:
	// a request for the phone is sent from that node. Empty on one node.
	Node string `json:"node,omitempty"`

	// rev identifies one write of the row by a REGISTER that changed it (a
	// new rev each time; a flushed refresh keeps it): a pending refresh
	// applies only to the row it was checked against (see refreshOverlay).
	rev uint64
}

// Live reports whether the binding is unexpired at now.
func (b Binding) Live(now time.Time) bool { return b.ExpiresAt.After(now) }

// key identifies the binding within its AOR: the instance id when the phone
// sent one (RFC 5626: the same device re-registering from a new address
// replaces its old contact), else the contact URI.
func (b Binding) key() string {
	if b.InstanceID != "" {
		return "i:" + b.InstanceID
	}
	return "c:" + b.Contact
}

// ContactUpdate is one Contact of a REGISTER, with the expiry the registrar
// granted (already bounded); Expires 0 removes the binding.
type ContactUpdate struct {
	URI        string
	InstanceID string
	Q          string
	Expires    int
}

// RegisterRequest is a REGISTER the registrar has authenticated.
type RegisterRequest struct {
	AccountID string
	UserID    string
	CallID    string
	CSeq      uint32
	Source    string
	Transport string
	UserAgent string
	// RemoveAll is "Contact: *" with Expires 0: remove every binding of the AOR.
	RemoveAll bool
	Contacts  []ContactUpdate
}

// Register applies a REGISTER (RFC 3261 §10.3 steps 6-8) in one group-committed
// write transaction and returns every live binding of the AOR afterwards.
//
// Errors: ErrNotFound if the user no longer exists (deleted after the digest
// check: the REGISTER lost the race), ErrDisabled if a disabled user tries to
// add or refresh a binding (removals are allowed), ErrOutOfOrder for a
// repeated or older CSeq on the same Call-ID.
func (db *DB) Register(r RegisterRequest) ([]Binding, error) {
	adds := false
	for _, c := range r.Contacts {
		if c.Expires > 0 {
			adds = true
		}
	}
	out, ok, begun := db.tryRefresh(r)
	if ok {
		return out, nil
	}
	mac := MACFromUserAgent(r.UserAgent)
	prefix := k(r.AccountID, r.UserID)
	if !begun {
		db.refresh.begin(prefix)
	}
	// held (etcd): the rows written, with their true expiry. A pointer set
	// only then, so that bbolt's closure captures nothing more.
	var wrote *heldWrites
	if db.refresh.held {
		wrote = &heldWrites{}
	}
	err := db.batch(func(t *tx) error {
		out = nil // fn may run more than once
		if wrote != nil {
			wrote.rows = wrote.rows[:0]
			if et, ok := t.kvTx.(*etcdTx); ok {
				t.OnCommit(func() { wrote.rev = et.committed })
			}
		}
		u, err := t.user(r.AccountID, r.UserID)
		if err != nil {
			return err
		}
		if adds && u.Status != StatusEnabled {
			return ErrDisabled
		}
		b := t.Bucket(bBindings)
		var rows []Binding
		if err := each(b, prefix, func(key, v []byte) error {
			var bd Binding
			if err := decodeBinding(v, &bd); err != nil {
				return err
			}
			rows = append(rows, bd)
			return nil
		}); err != nil {
			return err
		}
		t.db.refresh.apply(prefix, rows) // acknowledged refreshes not yet on disk
		current := make(map[string]Binding, len(rows)+len(r.Contacts))
		for _, bd := range rows {
			if !bd.Live(t.now) {
				// Prune the AOR's expired bindings as we go.
				if err := b.Delete([]byte(k(prefix, bd.key()))); err != nil {
					return err
				}
				t.bindingRemoved(bd.ExpiresAt)
				continue
			}
			current[bd.key()] = bd
		}
		if r.RemoveAll {
			for key, bd := range current {
				// §10.3 step 6: a wildcard with the same Call-ID and an older CSeq is refused.
				if bd.CallID == r.CallID && r.CSeq <= bd.CSeq {
					return ErrOutOfOrder
				}
				if err := b.Delete([]byte(k(prefix, key))); err != nil {
					return err
				}
				t.bindingRemoved(bd.ExpiresAt)
				delete(current, key)
			}
		}
		for _, c := range r.Contacts {
			nb := Binding{AccountID: r.AccountID, UserID: r.UserID, Contact: c.URI, InstanceID: c.InstanceID, Q: c.Q,
				Source: r.Source, Transport: strings.ToLower(r.Transport), UserAgent: r.UserAgent, MAC: mac,
				CallID: r.CallID, CSeq: r.CSeq, RegisteredAt: t.now, UpdatedAt: t.now,
				ExpiresAt: t.now.Add(time.Duration(c.Expires) * time.Second), Node: t.db.node, rev: t.db.nextRev()}
			key := nb.key()
			old, exists := current[key]
			if exists {
				if old.CallID == r.CallID && r.CSeq <= old.CSeq {
					return ErrOutOfOrder
				}
				nb.RegisteredAt = old.RegisteredAt
			}
			if c.Expires <= 0 {
				if exists {
					if err := b.Delete([]byte(k(prefix, key))); err != nil {
						return err
					}
					t.bindingRemoved(old.ExpiresAt)
					delete(current, key)
				}
				continue
			}
			if !exists && len(current) >= t.db.maxContacts {
				// Evict the binding that would expire soonest: it is the one
				// least recently refreshed, most likely a phone that went away.
				var victim string
				for vk, vb := range current {
					if victim == "" || vb.ExpiresAt.Before(current[victim].ExpiresAt) {
						victim = vk
					}
				}
				if err := b.Delete([]byte(k(prefix, victim))); err != nil {
					return err
				}
				t.bindingRemoved(current[victim].ExpiresAt)
				delete(current, victim)
			}
			if wrote != nil {
				// The row stores the horizon; this node holds the true
				// expiry (see refreshOverlay).
				h := nb
				h.ExpiresAt = horizon(t.now, time.Duration(c.Expires)*time.Second)
				val := encodeBinding(&h)
				wrote.rows = append(wrote.rows, heldWrite{b: nb, val: val})
				if err := b.Put([]byte(k(prefix, key)), val); err != nil {
					return err
				}
			} else if err := b.Put([]byte(k(prefix, key)), encodeBinding(&nb)); err != nil {
				return err
			}
			if exists {
				t.bindingRemoved(old.ExpiresAt)
			}
			t.bindingAdded(nb.ExpiresAt)
			current[key] = nb
		}
		out = sortedBindings(current)
		return nil
	})
	var written []heldWrite
	var writtenAt int64
	if wrote != nil {
		written, writtenAt = wrote.rows, wrote.rev
	}
	db.refresh.end(prefix, out, written, writtenAt, err == nil)
	if err == nil {
		db.sweep.lower(prefix, out)
	}
	if err != nil {
		if errors.Is(err, ErrDisabled) || errors.Is(err, ErrOutOfOrder) {
			return nil, err
		}
		return nil, fmt.Errorf("register %s: %w", r.UserID, err)
	}
	return out, nil
}

func sortedBindings(m map[string]Binding) []Binding {
	out := make([]Binding, 0, len(m))
	for _, b := range m {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].RegisteredAt.Before(out[j].RegisteredAt) || out[i].RegisteredAt.Equal(out[j].RegisteredAt) && out[i].Contact < out[j].Contact
	})
	return out
}

// liveBindings are the user's live bindings, with the acknowledged
// refreshes not yet on disk applied.
func (t *tx) liveBindings(acct, userID string) []Binding {
	var all []Binding
	_ = each(t.Bucket(bBindings), k(acct, userID), func(_, v []byte) error {
		var b Binding
		if decodeBinding(v, &b) == nil {
			all = append(all, b)
		}
		return nil
	})
	t.db.refresh.apply(k(acct, userID), all)
	out := all[:0]
	for _, b := range all {
		if b.Live(t.now) {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func (t *tx) deleteBindings(acct, userID string) error {
	b := t.Bucket(bBindings)
	var keys [][]byte
	var expires []time.Time
	_ = each(b, k(acct, userID), func(key, v []byte) error {
		keys = append(keys, append([]byte(nil), key...))
		var bd Binding
		if decodeBinding(v, &bd) == nil {
			t.db.refresh.applyOne(&bd) // the live count has its acknowledged expiry
			expires = append(expires, bd.ExpiresAt)
		}
		return nil
	})
	for _, key := range keys {
		if err := b.Delete(key); err != nil {
			return err
		}
	}
	for _, e := range expires {
		t.bindingRemoved(e)
	}
	return nil
}

// Bindings returns the user's live bindings (expired ones never show).
func (db *DB) Bindings(accountID, userID string) ([]Binding, error) {
	var out []Binding
	err := db.view(func(t *tx) error {
		if _, err := t.user(accountID, userID); err != nil {
			return err
		}
		out = t.liveBindings(accountID, userID)
		return nil
	})
	return out, err
}

// AccountBindings returns every live binding in the account.
func (db *DB) AccountBindings(accountID string) ([]Binding, error) {
	var out []Binding
	err := db.view(func(t *tx) error {
		if _, err := t.account(accountID); err != nil {
			return err
		}
		return each(t.Bucket(bBindings), accountID, func(_, v []byte) error {
			var b Binding
			if err := decodeBinding(v, &b); err != nil {
				return err
			}
			t.db.refresh.applyOne(&b)
			if b.Live(t.now) {
				out = append(out, b)
			}
			return nil
		})
	})
	return out, err
}

// SignOut removes every binding of the user (the admin's forced sign-out) and
// returns the ones it removed (live only).
func (db *DB) SignOut(accountID, userID string, actor Actor) ([]Binding, error) {
	var removed []Binding
	err := db.update(func(t *tx) error {
		u, err := t.user(accountID, userID)
		if err != nil {
			return err
		}
		removed = t.liveBindings(accountID, userID)
		if err := t.deleteBindings(accountID, userID); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "registrations.sign_out", TargetKind: "user", TargetID: userID, TargetLabel: u.Label(),
			Detail: map[string]string{"removed": fmt.Sprint(len(removed))}})
	})
	if err != nil {
		return nil, fmt.Errorf("sign out %s: %w", userID, err)
	}
	return removed, nil
}

// PruneExpired deletes every expired binding and reports how many (a binding
// whose acknowledged refresh is not yet on disk is live). Open calls it, and
// cmd/dialtone's sweeper once a minute. It reads only the AORs the sweep
// index says may hold an expired row (see sweepIndex), not every binding. Correctness never depends on
// it: reads and LiveBindings ignore expired rows whether or not they are gone.
// On etcd it sweeps sweepChunk AORs a transaction, each under the gate.
func (db *DB) PruneExpired() (int, error) {
	due := db.sweep.due(db.now().UnixNano())
	chunk := len(due)
	if db.etcd != nil {
		// etcd counts a transaction's compares, one or more an AOR read,
		// against its --max-txn-ops (default 128): one sweep of every due
		// AOR would fail for ever once more than that are due.
		chunk = sweepChunk
	}
	aors := make([]string, 0, len(due))
	for aor := range due {
		aors = append(aors, aor)
	}
	sort.Strings(aors)
	total := 0
	for len(aors) > 0 {
		n, done, err := db.pruneAORs(aors[:min(chunk, len(aors))], due)
		total += n
		if err != nil {
			return total, err
		}
		aors = aors[done:]
	}
	return total, nil
}

// sweepChunk is how many AORs one sweep transaction reads on etcd, and
// sweepWrites how many rows it deletes at most before it leaves the AORs
// it has not read to the next one (AORs full of expired rows).
const (
	sweepChunk  = 50
	sweepWrites = 60
)

// pruneAORs is PruneExpired for the first of aors, AORs the sweep index said
// were due (due: the values it had), in one transaction; it returns how
// many rows it deleted and how many of aors it swept (at least one).
func (db *DB) pruneAORs(aors []string, due map[string]int64) (int, int, error) {
	n, done := 0, 0
	var seen map[string]int64
	var kept map[string]int64
	held := db.refresh.held
	var swept time.Time
	if held {
		// As bbolt's update does: no pure refresh is checked against the
		// rows this sweep is deleting (see refreshOverlay's gate).
		db.refresh.gate.Lock()
		defer db.refresh.gate.Unlock()
	}
	var known []string // held: AORs as this node knows them, rows swept
	var rev int64      // held: the revision of the sweep's commit
	var none []string  // held: AORs left with no row of this node
	var readRev int64  // held: the revision the sweep read them at
	err := db.update(func(t *tx) error {
		swept = t.now
		n, known, none = 0, known[:0], none[:0]
		et, _ := t.kvTx.(*etcdTx)
		if held && et != nil {
			t.OnCommit(func() { rev, readRev = et.committed, et.rev })
		}
		now := t.now.UnixNano()
		kept, seen, done = map[string]int64{}, map[string]int64{}, 0
		b := t.Bucket(bBindings)
		var doomed [][]byte
		for _, aor := range aors {
			if et != nil && done > 0 && n+done >= sweepWrites {
				break // its deletes and version keys: under etcd's --max-txn-ops
			}
			done++
			seen[aor] = due[aor]
			next, left, mine := int64(math.MaxInt64), false, false
			doomed = doomed[:0]
			if err := b.ForEachPrefix([]byte(aor+"/"), func(key, v []byte) error {
				e, decErr := bindingExpiry(v)
				own := false
				if decErr == nil && held {
					// The stored expiry of this node's rows is a horizon:
					// the true one is in memory.
					var bd Binding
					if decodeBinding(v, &bd) == nil {
						t.db.refresh.applyOne(&bd)
						e = bd.ExpiresAt.UnixNano()
						own = bd.Node == t.db.node
					}
				} else if decErr == nil && e <= now {
					// Expired on disk; a refresh not yet written may keep it.
					var bd Binding
					if decodeBinding(v, &bd) == nil {
						t.db.refresh.applyOne(&bd)
						e = bd.ExpiresAt.UnixNano()
					}
				}
				if decErr != nil || e <= now {
					doomed = append(doomed, bytes.Clone(key))
					if decErr == nil { // an unreadable row was never counted
						t.bindingRemoved(time.Unix(0, e))
					}
					return nil
				}
				next, left = min(next, e), true
				mine = mine || own
				return nil
			}); err != nil {
				return err
			}
			if held && et != nil && !mine {
				none = append(none, aor)
			}
			if held && et != nil && len(doomed) > 0 {
				if ok, err := t.db.refresh.knownAt(et, aor); err != nil {
					return err
				} else if ok {
					known = append(known, aor)
				}
			}
			for _, key := range doomed {
				if err := b.Delete(key); err != nil {
					return err
				}
			}
			n += len(doomed)
			if left {
				kept[aor] = next
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("prune expired bindings: %w", err)
	}
	db.sweep.settle(seen, kept)
	db.refresh.knownSince(known, rev)
	db.refresh.forgetExpired(seen, swept)
	db.refresh.forgetAORs(none, readRev)
	return n, done, nil
}

// MACFromUserAgent finds a MAC address in a Yealink-style User-Agent
// ("Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc") and returns it as 12
// lower-case hex digits, or "" if there is none.
func MACFromUserAgent(ua string) string {
	for _, f := range strings.Fields(ua) {
		if m, ok := NormalizeMAC(f); ok {
			return m
		}
	}
	return ""
}

// NormalizeMAC accepts 12 hex digits, optionally separated by ':' or '-' in
// pairs, and returns them as 12 lower-case hex digits.
func NormalizeMAC(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if len(s) == 17 {
		sep := s[2]
		if sep != ':' && sep != '-' {
			return "", false
		}
		for i := 2; i < 17; i += 3 {
			if s[i] != sep {
				return "", false
			}
		}
		s = strings.ReplaceAll(s, string(sep), "")
	}
	if len(s) != 12 {
		return "", false
	}
	out := make([]byte, 12)
	for i := 0; i < 12; i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
			out[i] = c
		case c >= 'A' && c <= 'F':
			out[i] = c + ('a' - 'A')
		default:
			return "", false
		}
	}
	return string(out), true
}
