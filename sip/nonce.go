package sip

import (
	"time"

	"github.com/dialtone-voip/dialtone/internal/digest"
)

// nonces are the registrar's digest nonces and nonce counts: stateless HMAC
// nonces bound to the realm and the client's source address, and a bounded
// table of the highest nonce count accepted per nonce (internal/digest).
type nonces = digest.Nonces

// nonceLen is the length of every nonce.
const nonceLen = digest.NonceLen

func newNonces(ttl time.Duration, maxEntries int) (*nonces, error) {
	return digest.NewNonces(ttl, maxEntries)
}
