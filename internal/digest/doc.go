// Package digest is the one HTTP Digest implementation (RFC 7616, with the
// SIP rules of RFC 3261 §22 and the SHA-256 of RFC 8760) shared by the SIP
// registrar and the provisioning server. It holds the mechanism only; each
// protocol keeps its own policy (realm, challenge headers, which qop and
// algorithms it offers, what a failure costs the client).
//
// # Nonces
//
// Nonces are stateless: base64url(ts | salt | mac), where ts is the issue
// time in Unix nanoseconds (8 bytes), salt 8 random bytes (two challenges in
// the same instant differ) and mac the first 16 bytes of
// HMAC-SHA256(key, ts | salt | source | realm). The key is random per
// process, so a restart invalidates outstanding nonces (clients get a new
// challenge, which is harmless).
//
// A nonce is bound to:
//
//   - the realm (or any protection space the caller names, see
//     [Nonces.Issue]): a nonce issued for one account is useless against
//     another;
//   - the client's source IP address, without the port. The binding is what
//     lets a caller count a failure only once the nonce verifies: a client
//     that invents an Authorization, or replays someone else's nonce from
//     another address (over UDP the address can be spoofed, but the answer
//     carrying the nonce goes to the real owner of the address), never gets
//     past [Nonces.Check], so it cannot make another address accumulate
//     failures. The port is left out on purpose: behind a NAT the port of a
//     phone's flow changes when the binding is renewed, and a phone that
//     reconnects over TCP gets a new one, while the public address stays.
//     Phones behind one NAT share their address and can therefore use each
//     other's nonces; that gives nothing away, since a nonce is public and
//     the response still needs the password.
//   - an issue time: a nonce older than the TTL (or from more than a minute
//     in the future) is [Stale]; the caller answers a correct response on a
//     stale nonce with a fresh challenge with stale=true (RFC 7616 §3.3).
//
// # Nonce counts
//
// [Nonces.Use] remembers the highest nonce count accepted per nonce and
// refuses any count not above it (a replayed Authorization). Entries live
// in two generations; the current one becomes the previous one every TTL
// (or early, when it holds its maximum), and the previous one is dropped at
// the next rotation. An entry is therefore dropped no earlier than a TTL
// after its last use, when its nonce has expired anyway. After an early
// rotation, a nonce issued before the rotation whose entry is gone is
// answered as stale, so dropping entries never re-opens a nonce to replay.
// Memory is bounded by twice the maximum.
//
// # Credentials
//
// [Parse] checks an Authorization (or Proxy-Authorization) value's shape:
// every field verification needs, algorithm MD5 or SHA-256, qop "auth" with
// a cnonce and a positive nonce count (or, when the caller allows it, no qop
// at all, RFC 2069), and a response of hex of the algorithm's length.
// [Verify] recomputes the response from the stored HA1 ([HA1]) and compares
// it in constant time; callers store (or derive once) HA1 per realm and
// algorithm instead of handing passwords around.
package digest
