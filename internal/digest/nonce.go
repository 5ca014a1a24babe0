package digest

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"time"
)

const nonceRawLen = 8 + 8 + 16

// NonceLen is the length of every nonce Issue returns.
const NonceLen = (nonceRawLen*8 + 5) / 6 // base64 without padding

const nonceLen = NonceLen

// Key identifies one issued nonce (its issue time and salt).
type Key [16]byte

func (k Key) issued() int64 { return int64(binary.BigEndian.Uint64(k[:8])) }

// State is what [Nonces.Check] learns about a nonce.
type State int

const (
	Bad   State = iota // not one of ours, or for another realm or source address
	Fresh              // ours, for this realm and source, within the TTL
	Stale              // ours, for this realm and source, but expired
)

func (s State) String() string {
	switch s {
	case Fresh:
		return "fresh"
	case Stale:
		return "stale"
	}
	return "bad"
}

// Nonces issues and verifies nonces and tracks their nonce counts. It is safe
// for concurrent use.
type Nonces struct {
	key []byte
	ttl time.Duration

	mu         sync.Mutex
	cur, prev  map[Key]uint32
	curStart   time.Time
	floor      int64 // unix nanos; nonces issued before it need an entry
	maxEntries int
}

// NewNonces returns nonces valid for ttl, remembering nonce counts of at most
// maxEntries nonces per generation (so 2*maxEntries in all).
func NewNonces(ttl time.Duration, maxEntries int) (*Nonces, error) {
	if ttl <= 0 || maxEntries <= 0 {
		return nil, errors.New("digest: nonce TTL and table size must be positive")
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	return &Nonces{key: key, ttl: ttl, cur: map[Key]uint32{}, prev: map[Key]uint32{}, maxEntries: maxEntries}, nil
}

// SetKey replaces the random key nonces are made with by key (at least 32
// bytes), shared by the processes that must verify each other's nonces
// (several nodes of one deployment). Call it before the first Issue.
func (n *Nonces) SetKey(key []byte) error {
	if len(key) < 32 {
		return errors.New("digest: nonce key shorter than 32 bytes")
	}
	n.key = bytes.Clone(key)
	return nil
}

// TTL is how long a nonce stays fresh.
func (n *Nonces) TTL() time.Duration { return n.ttl }

// mac appends the first 16 bytes of the HMAC of tsSalt, src and realm to dst.
func (n *Nonces) mac(dst, tsSalt []byte, realm string, src netip.Addr) []byte {
	m := hmac.New(sha256.New, n.key)
	m.Write(tsSalt)
	var a [17]byte // 0 + 16 bytes, or 1 + 16 zero bytes for "no address"
	if src.IsValid() {
		b := src.Unmap().As16()
		copy(a[1:], b[:])
	} else {
		a[0] = 1
	}
	m.Write(a[:])
	m.Write([]byte(realm))
	return m.Sum(dst)[:len(dst)+16]
}

// Issue returns a fresh nonce for realm, bound to the client's source address
// src (its IP address; pass the zero Addr when there is none). realm is the
// protection space the nonce is good for: SIP passes the realm itself;
// provisioning, whose realm is shared by every account, passes its realm
// with the account's id.
func (n *Nonces) Issue(realm string, src netip.Addr, now time.Time) string {
	var raw [nonceRawLen + 16]byte // room for the full HMAC before truncation
	binary.BigEndian.PutUint64(raw[:8], uint64(now.UnixNano()))
	if _, err := rand.Read(raw[8:16]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	n.mac(raw[:16], raw[:16], realm, src)
	return base64.RawURLEncoding.EncodeToString(raw[:nonceRawLen])
}

// Check verifies that nonce was issued by this process for realm and src, and
// whether it is still fresh. It returns the nonce's key for [Nonces.Use].
func (n *Nonces) Check(nonce, realm string, src netip.Addr, now time.Time) (State, Key) {
	var k Key
	if len(nonce) != nonceLen {
		return Bad, k
	}
	var raw [nonceRawLen]byte
	if m, err := base64.RawURLEncoding.Strict().Decode(raw[:], []byte(nonce)); err != nil || m != nonceRawLen {
		return Bad, k
	}
	var want [16 + 32]byte
	copy(want[:16], raw[:16])
	n.mac(want[:16], raw[:16], realm, src)
	if !hmac.Equal(want[16:32], raw[16:32]) {
		return Bad, k
	}
	copy(k[:], raw[:16])
	age := now.UnixNano() - k.issued()
	if age < -int64(time.Minute) || age > int64(n.ttl) {
		// Also refuse nonces from the future (a clock stepped back by more
		// than a minute): they would otherwise live longer than the TTL.
		return Stale, k
	}
	return Fresh, k
}

// Use records nonce count nc for the nonce k and reports whether it is new:
// ok is false when nc is not above the highest count already accepted for
// it (a replay), or when the nonce's entry may have been dropped early (then
// stale is true and the caller answers as for a stale nonce). Call it only
// after the response verified, so that guesses do not consume counts.
func (n *Nonces) Use(k Key, nc uint32, now time.Time) (ok, stale bool) {
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
	if !seen && k.issued() < n.floor {
		return false, true
	}
	if seen && nc <= last {
		return false, false
	}
	if len(n.cur) >= n.maxEntries {
		n.floor = n.curStart.UnixNano()
		n.rotate(now)
		if k.issued() < n.floor {
			return false, true
		}
	}
	n.cur[k] = nc
	return true, false
}

func (n *Nonces) rotate(now time.Time) {
	n.prev = n.cur
	n.cur = make(map[Key]uint32, len(n.prev)/2)
	n.curStart = now
}

// Size is the number of nonces whose count is remembered.
func (n *Nonces) Size() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.cur) + len(n.prev)
}
