package sip

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"sync"
	"time"
)

// Nonces are stateless: base64url(ts | salt | mac) where ts is the issue
// time in Unix nanoseconds (8 bytes), salt 8 random bytes (so two challenges
// in the same instant differ) and mac the first 16 bytes of
// HMAC-SHA256(key, ts | salt | realm). The key is random per process, so a
// restart invalidates outstanding nonces (clients just get a new challenge).
// Binding the realm into the MAC means a nonce issued for one account cannot
// be used against another.
const (
	nonceRawLen = 8 + 8 + 16
	nonceLen    = (nonceRawLen*8 + 5) / 6 // base64 without padding
)

type nonceKey [16]byte // ts | salt: identifies one issued nonce

type nonces struct {
	key []byte
	ttl time.Duration

	// Nonce-count replay protection: the highest nc accepted per nonce.
	// Entries live in two generations; cur becomes prev every ttl (or
	// early when it holds maxEntries), and prev is dropped at the next
	// rotation. An entry is dropped no earlier than ttl after its last use,
	// by which time its nonce has expired anyway. After an early rotation a
	// nonce issued before floor whose entry is gone is treated as stale, so
	// dropping entries never re-opens a nonce to replay.
	mu         sync.Mutex
	cur, prev  map[nonceKey]uint32
	curStart   time.Time
	floor      int64 // unix nanos; nonces issued before it need an entry
	maxEntries int
}

func newNonces(ttl time.Duration, maxEntries int) (*nonces, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	return &nonces{key: key, ttl: ttl, cur: map[nonceKey]uint32{}, prev: map[nonceKey]uint32{}, maxEntries: maxEntries}, nil
}

func (n *nonces) mac(dst []byte, tsSalt []byte, realm string) []byte {
	m := hmac.New(sha256.New, n.key)
	m.Write(tsSalt)
	m.Write([]byte(realm))
	return m.Sum(dst)[:len(dst)+16]
}

// issue returns a fresh nonce for realm.
func (n *nonces) issue(realm string, now time.Time) string {
	var raw [nonceRawLen + 16]byte // room for the full HMAC before truncation
	binary.BigEndian.PutUint64(raw[:8], uint64(now.UnixNano()))
	if _, err := rand.Read(raw[8:16]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	n.mac(raw[:16], raw[:16], realm)
	return base64.RawURLEncoding.EncodeToString(raw[:nonceRawLen])
}

// nonceState is what check learns about a nonce.
type nonceState int

const (
	nonceBad   nonceState = iota // not one of ours, or for another realm
	nonceFresh                   // ours, for this realm, within ttl
	nonceStale                   // ours, for this realm, but expired
)

// check verifies that nonce was issued by this process for realm and
// whether it is still fresh. It returns the nonce's key for use.
func (n *nonces) check(nonce, realm string, now time.Time) (nonceState, nonceKey) {
	var k nonceKey
	if len(nonce) != nonceLen {
		return nonceBad, k
	}
	var raw [nonceRawLen]byte
	if m, err := base64.RawURLEncoding.Decode(raw[:], []byte(nonce)); err != nil || m != nonceRawLen {
		return nonceBad, k
	}
	var want [16 + 32]byte
	copy(want[:16], raw[:16])
	n.mac(want[:16], raw[:16], realm)
	if !hmac.Equal(want[16:32], raw[16:32]) {
		return nonceBad, k
	}
	copy(k[:], raw[:16])
	issued := int64(binary.BigEndian.Uint64(raw[:8]))
	age := now.UnixNano() - issued
	if age < -int64(time.Minute) || age > int64(n.ttl) {
		// Also refuse nonces from the future (a clock step back by more
		// than a minute): they would otherwise live longer than ttl.
		return nonceStale, k
	}
	return nonceFresh, k
}

// use records nc for the nonce and reports whether it is new: false when
// nc is not above the highest count already accepted for it (a replay), or
// when the nonce's entry may have been dropped early (then the caller
// treats it as stale).
func (n *nonces) use(k nonceKey, nc uint32, now time.Time) (ok, stale bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.curStart.IsZero() {
		n.curStart = now
	}
	if now.Sub(n.curStart) >= n.ttl {
		n.rotate(now)
	}
	last, seen := n.cur[k]
	if !seen {
		last, seen = n.prev[k]
	}
	if !seen && int64(binary.BigEndian.Uint64(k[:8])) < n.floor {
		return false, true
	}
	if seen && nc <= last {
		return false, false
	}
	if len(n.cur) >= n.maxEntries {
		n.floor = n.curStart.UnixNano()
		n.rotate(now)
		if int64(binary.BigEndian.Uint64(k[:8])) < n.floor {
			return false, true
		}
	}
	n.cur[k] = nc
	return true, false
}

func (n *nonces) rotate(now time.Time) {
	n.prev = n.cur
	n.cur = make(map[nonceKey]uint32, len(n.prev)/2)
	n.curStart = now
}

// size is the number of remembered nonces (for tests).
func (n *nonces) size() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.cur) + len(n.prev)
}
