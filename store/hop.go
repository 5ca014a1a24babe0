package store

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"path/filepath"
)

// hopKeyLabel separates the hop key from every other use of secret.key.
const hopKeyLabel = "dialtone node hop v1"

// HopKey is the key the nodes of a deployment on etcd authenticate the
// requests they pass each other with (sip: the X-Dialtone-Hop header). It
// is derived from secret.key (HKDF-SHA256 with a label of its own), which
// every node holds the same, so every node derives the same key; the key
// itself never leaves the data directory. On bbolt (one node) it returns
// ErrNoNodes. Never log it.
func (db *DB) HopKey() ([]byte, error) {
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
	return hkdf.Key(sha256.New, key, nil, hopKeyLabel, 32)
}
