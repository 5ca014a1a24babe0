package store

import (
	"bytes"
	"time"
)

// Retention: the audit log and call records are append-only and would grow
// forever. PruneAudit and PruneCalls delete entries older than a cutoff in
// small batches, one short write transaction each, so a large backlog never
// holds the writer lock for long; callers loop while more is true.

// DefaultPruneBatch is how many entries one prune transaction deletes at
// most when the caller passes 0.
const DefaultPruneBatch = 500

// PruneAudit deletes up to batch audit entries (of every account) whose time
// is before cutoff. more reports that the batch was full (call again).
func (db *DB) PruneAudit(cutoff time.Time, batch int) (n int, more bool, err error) {
	return db.pruneOld(bAudit, cutoff, batch, func(v []byte) (time.Time, error) {
		var e AuditEntry
		err := decode(v, &e)
		return e.Time, err
	})
}

// PruneCalls deletes up to batch call records whose start is before cutoff.
func (db *DB) PruneCalls(cutoff time.Time, batch int) (n int, more bool, err error) {
	return db.pruneOld(bCalls, cutoff, batch, func(v []byte) (time.Time, error) {
		var r CallRecord
		err := decode(v, &r)
		return r.StartedAt, err
	})
}

// pruneOld deletes old entries of a bucket keyed acct/seq. Within an account
// entries are in append order, so it deletes from each account's oldest
// entry up to the first one at or after cutoff, then skips to the next
// account. An entry that does not decode is left for Check to report.
func (db *DB) pruneOld(bucket []byte, cutoff time.Time, batch int, timeOf func([]byte) (time.Time, error)) (int, bool, error) {
	if batch <= 0 {
		batch = DefaultPruneBatch
	}
	var n int
	err := db.update(func(t *tx) error {
		n = 0
		b := t.Bucket(bucket)
		var doomed [][]byte
		c := b.Cursor()
		for k, v := c.First(); k != nil && len(doomed) < batch; {
			ts, err := timeOf(v)
			if err == nil && ts.Before(cutoff) {
				doomed = append(doomed, bytes.Clone(k))
				k, v = c.Next()
				continue
			}
			if err != nil {
				k, v = c.Next()
				continue
			}
			// The rest of this account is newer: skip to the next account
			// ('0' sorts right after '/').
			acct, _, ok := bytes.Cut(k, []byte("/"))
			if !ok {
				k, v = c.Next()
				continue
			}
			k, v = c.Seek(append(bytes.Clone(acct), '0'))
		}
		for _, k := range doomed {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(doomed)
		return nil
	})
	return n, n == batch, err
}

// RetentionCounts are the sizes of the append-only logs, for operators.
type RetentionCounts struct {
	Audit, Calls int
}

// LogCounts counts audit entries and call records.
func (db *DB) LogCounts() (RetentionCounts, error) {
	var rc RetentionCounts
	err := db.view(func(t *tx) error {
		var err error
		if rc.Audit, err = bucketKeys(t.Bucket(bAudit)); err != nil {
			return err
		}
		rc.Calls, err = bucketKeys(t.Bucket(bCalls))
		return err
	})
	return rc, err
}
