package store

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"time"
)

// Trusted sources: the addresses from which clients recently authenticated
// (internal/guard's "this address has good registrations"), kept across
// restarts so that an office NAT is not treated as a stranger after one. They
// are not domain data: one value, rewritten whole, in a bucket of its own,
// outside the cache generation the domain's writes advance.

// MaxTrustedSources bounds what SaveTrustedSources keeps (the soonest-expiring
// entries beyond it are dropped).
const MaxTrustedSources = 100_000

var (
	bucketTrust = []byte("trusted_sources")
	keyTrust    = []byte("v1")
)

const trustRecordLen = 16 + 8 // address (16-byte form) | until (unix seconds)

// SaveTrustedSources replaces the stored trusted sources with m (address →
// trusted until). Entries already expired by the store's clock are left out.
func (db *DB) SaveTrustedSources(m map[netip.Addr]time.Time) error {
	now := db.now()
	buf := make([]byte, 0, min(len(m), MaxTrustedSources)*trustRecordLen)
	n := 0
	for a, until := range m {
		if !until.After(now) || !a.IsValid() {
			continue
		}
		if n == MaxTrustedSources {
			break
		}
		b := a.As16()
		buf = append(buf, b[:]...)
		buf = binary.BigEndian.AppendUint64(buf, uint64(until.Unix()))
		n++
	}
	// db.kv, not db.update: outside the cache generation and the refresh gate.
	return db.kv.update(func(t kvTx) error { return t.Bucket(bucketTrust).Put(keyTrust, buf) })
}

// TrustedSources returns the stored trusted sources that have not expired by
// the store's clock. IPv4 addresses come back in their 4-byte form.
func (db *DB) TrustedSources() (map[netip.Addr]time.Time, error) {
	now := db.now()
	out := map[netip.Addr]time.Time{}
	err := db.kv.view(func(t kvTx) error {
		v := t.Bucket(bucketTrust).Get(keyTrust)
		if len(v)%trustRecordLen != 0 || len(v)/trustRecordLen > MaxTrustedSources {
			return errors.New("store: trusted sources record is corrupt")
		}
		for ; len(v) > 0; v = v[trustRecordLen:] {
			a := netip.AddrFrom16([16]byte(v[:16])).Unmap()
			until := time.Unix(int64(binary.BigEndian.Uint64(v[16:trustRecordLen])), 0)
			if until.After(now) {
				out[a] = until
			}
		}
		return nil
	})
	return out, err
}
