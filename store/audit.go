package store

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Actor is who asked for a change: an admin token, or dialtone itself.
type Actor struct {
	TokenID string
	Name    string
	Role    string
	Source  string // client address, when known
}

// System is the actor for changes dialtone makes on its own.
var System = Actor{Name: "system", Role: "system"}

// AuditEntry is one append-only record: who did what to which thing, when,
// with what result. Target is kept as a label (e.g. "1002 Ada Lovelace") so the
// entry still reads after the thing is deleted.
type AuditEntry struct {
	Seq         uint64            `json:"seq"`
	Time        time.Time         `json:"time"`
	AccountID   string            `json:"account_id"`
	Actor       Actor             `json:"actor"`
	Action      string            `json:"action"`
	TargetKind  string            `json:"target_kind"`
	TargetID    string            `json:"target_id"`
	TargetLabel string            `json:"target_label"`
	Result      string            `json:"result"` // "ok", or the refusal's code
	Detail      map[string]string `json:"detail,omitempty"`
}

// audit appends e inside tx.
func (t *tx) audit(e AuditEntry) error {
	b := t.Bucket(bAudit)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	e.Seq = seq
	e.Time = t.now
	if e.Result == "" {
		e.Result = "ok"
	}
	return put(b, auditKey(e.AccountID, seq), e)
}

func auditKey(acct string, seq uint64) string {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], seq)
	return acct + "/" + string(n[:])
}

// RecordAudit appends an entry on its own (for refusals, whose transaction
// rolled back, and for reads that must be audited).
func (db *DB) RecordAudit(e AuditEntry) error {
	return db.update(func(t *tx) error { return t.audit(e) })
}

// Audit lists an account's entries, newest first: at most limit (default 100,
// at most 1000), only those with Seq < before when before > 0.
func (db *DB) Audit(accountID string, limit int, before uint64) ([]AuditEntry, error) {
	if limit <= 0 {
		limit = 100
	}
	if limit > 1000 {
		limit = 1000
	}
	var out []AuditEntry
	err := db.view(func(t *tx) error {
		c := t.Bucket(bAudit).Cursor()
		prefix := accountID + "/"
		var key, v []byte
		if before > 0 {
			key, v = c.Seek([]byte(auditKey(accountID, before)))
			if key == nil {
				key, v = c.Last()
			}
			if key != nil && string(key) >= auditKey(accountID, before) {
				key, v = c.Prev()
			}
		} else {
			// Seek just past the account's last key.
			key, _ = c.Seek([]byte(accountID + "0")) // '0' sorts right after '/'
			if key == nil {
				key, v = c.Last()
			} else {
				key, v = c.Prev()
			}
		}
		for ; key != nil && len(out) < limit; key, v = c.Prev() {
			if len(key) <= len(prefix) || string(key[:len(prefix)]) != prefix {
				break
			}
			var e AuditEntry
			if err := decode(v, &e); err != nil {
				return fmt.Errorf("audit %x: %w", key, err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}
