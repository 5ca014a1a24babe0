package store

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"path/filepath"
)

// hopKeyLabel separates the hop key from every other use of secret.key.
const hopKeyLabel = "dialtone node hop v1"

// NonceKey is the key digest nonces are made with (SIP and provisioning)
// in a deployment on etcd: derived from secret.key (HKDF-SHA256, its own
// label), so a nonce one node issued verifies on every other. A phone
// behind DNS SRV or a load balancer may send its answer to the challenge to
// another node than the one that sent it; with a key per process it would
// be challenged again and again. On bbolt (one node) it returns ErrNoNodes:
// the process keeps a random key of its own. Never log it.
func (db *DB) NonceKey(purpose string) ([]byte, error) {
	return db.derivedKey("dialtone digest nonce v1 " + purpose)
}

// HopKey is the key the nodes of a deployment on etcd authenticate the
// requests they pass each other with (sip: the X-Dialtone-Hop header). It
// is derived from secret.key (HKDF-SHA256 with a label of its own), which
// every node holds the same, so every node derives the same key; the key
// itself never leaves the data directory. On bbolt (one node) it returns
// ErrNoNodes. Never log it.
func (db *DB) HopKey() ([]byte, error) { return db.derivedKey(hopKeyLabel) }

// derivedKey is a key derived from secret.key with label; ErrNoNodes on
// bbolt.
func (db *DB) derivedKey(label string) ([]byte, error) {
	if db.etcd == nil {
		return nil, ErrNoNodes
	}
	key, err := readKey(filepath.Join(db.dir, KeyFile))
	if err != nil {
		return nil, err
	}
	if key == nil {
		return nil, fmt.Errorf("hop key: %s is missing", filepath.Join(db.dir, KeyFile))
	}
	return hkdf.Key(sha256.New, key, nil, label, 32)
}
