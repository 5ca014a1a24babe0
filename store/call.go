package store

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// Call outcomes.
const (
	OutcomeAnnouncedBusy = "announced_busy" // disabled extension: announcement, then 486
	OutcomeRouted        = "routed"         // forwarded to contacts, no answer recorded (yet)
	OutcomeAnswered      = "answered"
	OutcomeUnavailable   = "unavailable" // enabled but unregistered, or no answer: 480/408
	OutcomeNotFound      = "not_found"
	OutcomeForbidden     = "forbidden"
	OutcomeCancelled     = "cancelled"
	OutcomeBusy          = "busy"
	OutcomeFailed        = "failed"
)

// CallRecord is one INVITE dialtone handled. Caller and callee are kept as
// extensions and names (not only ids), so the record still reads after the
// users are deleted.
type CallRecord struct {
	Seq        uint64    `json:"seq"`
	ID         string    `json:"id"`
	AccountID  string    `json:"account_id"`
	StartedAt  time.Time `json:"started_at"`
	AnsweredAt time.Time `json:"answered_at,omitzero"`
	EndedAt    time.Time `json:"ended_at"`
	// Duration is the talk time (answer to hang-up) of an answered call once
	// it has ended (EndCall), else the time from INVITE to final response.
	Duration   time.Duration `json:"duration"`
	CallID     string        `json:"call_id"`
	From       string        `json:"from"` // caller extension or URI
	FromName   string        `json:"from_name"`
	FromUserID string        `json:"from_user_id"`
	To         string        `json:"to"` // dialled extension or number
	ToName     string        `json:"to_name"`
	ToUserID   string        `json:"to_user_id"`
	Outcome    string        `json:"outcome"`
	Status     int           `json:"status"` // final SIP status sent to the caller
	Source     string        `json:"source"`
	Transport  string        `json:"transport"`
	Detail     string        `json:"detail,omitempty"`
}

var bCalls = []byte("calls") // acct/seq(8 bytes) → CallRecord

// RecordCall appends a call record; it fills Seq and ID.
func (db *DB) RecordCall(r CallRecord) (CallRecord, error) {
	if r.AccountID == "" {
		return CallRecord{}, invalid("account_id", "is required")
	}
	// Group-committed like REGISTER: call records are frequent, append-only
	// and touch nothing another cache depends on.
	var out CallRecord
	err := db.batch(func(t *tx) error {
		r := r // fn may run more than once: start from the caller's record each time
		b := t.Bucket(bCalls)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		r.Seq = seq
		r.ID = fmt.Sprintf("call-%d", seq)
		if r.StartedAt.IsZero() {
			r.StartedAt = t.now
		}
		if r.EndedAt.IsZero() {
			r.EndedAt = t.now
		}
		if r.Duration == 0 {
			r.Duration = r.EndedAt.Sub(r.StartedAt)
		}
		out = r
		return put(b, callKey(r.AccountID, seq), r)
	})
	if err != nil {
		return CallRecord{}, fmt.Errorf("record call: %w", err)
	}
	return out, nil
}

func callKey(acct string, seq uint64) string {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], seq)
	return acct + "/" + string(n[:])
}

// CallFilter selects call records; zero fields match everything.
type CallFilter struct {
	Outcome   string
	Extension string // matches From or To
	Since     time.Time
	Until     time.Time
	Before    uint64 // only records with Seq < Before (paging)
	Limit     int    // default 100, at most 1000
}

// Calls lists the account's call records, newest first.
func (db *DB) Calls(accountID string, f CallFilter) ([]CallRecord, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	if f.Limit > 1000 {
		f.Limit = 1000
	}
	var out []CallRecord
	err := db.view(func(t *tx) error {
		if _, err := t.account(accountID); err != nil {
			return err
		}
		c := t.Bucket(bCalls).Cursor()
		prefix := accountID + "/"
		var key, v []byte
		if f.Before > 0 {
			key, v = c.Seek([]byte(callKey(accountID, f.Before)))
			if key == nil {
				key, v = c.Last()
			}
			if key != nil && string(key) >= callKey(accountID, f.Before) {
				key, v = c.Prev()
			}
		} else {
			key, _ = c.Seek([]byte(accountID + "0")) // just past the account's keys
			if key == nil {
				key, v = c.Last()
			} else {
				key, v = c.Prev()
			}
		}
		for ; key != nil && len(out) < f.Limit && strings.HasPrefix(string(key), prefix); key, v = c.Prev() {
			var r CallRecord
			if err := decode(v, &r); err != nil {
				return err
			}
			if !f.Since.IsZero() && r.StartedAt.Before(f.Since) {
				break // older from here on
			}
			if !f.Until.IsZero() && !r.StartedAt.Before(f.Until) {
				continue
			}
			if f.Outcome != "" && r.Outcome != f.Outcome {
				continue
			}
			if f.Extension != "" && r.From != f.Extension && r.To != f.Extension {
				continue
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// EndCall marks an answered call as ended at endedAt (its BYE): Duration
// becomes the talk time from AnsweredAt. ErrNotFound if there is no such record.
func (db *DB) EndCall(accountID string, seq uint64, endedAt time.Time) error {
	err := db.batch(func(t *tx) error {
		b := t.Bucket(bCalls)
		var r CallRecord
		if err := get(b, callKey(accountID, seq), &r); err != nil {
			return err
		}
		start := r.AnsweredAt
		if start.IsZero() {
			start = r.StartedAt
		}
		r.EndedAt = endedAt
		r.Duration = max(endedAt.Sub(start), 0)
		return put(b, callKey(accountID, seq), r)
	})
	if err != nil {
		return fmt.Errorf("end call %d: %w", seq, err)
	}
	return nil
}
