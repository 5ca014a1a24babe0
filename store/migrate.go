package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// Migration copies one store into another, key by key, through kvTx on both
// sides: from a bbolt data directory into an etcd prefix (to go from one
// node to several) or back (a bbolt copy of a deployment, for backups that
// dialtone restore and dialtone check understand). Writes go through the
// destination backend's own write path, so on etcd the version keys a write
// needs are added by the etcd backend itself and its layout stays defined in
// one place (etcd.go).
//
// Idempotent and resumable: every batch commits on its own, and a key
// already equal in the destination is skipped, so a second run copies
// nothing and a run after an interruption copies what is left. The
// NextSequence counters (audit and call record ids) are copied before the
// keys of their bucket, never lowered: the destination's next id is always
// above every copied one.

// ErrWrongKey means a secret.key does not belong to the data it was given
// with: the key check (meta key_check) of the store does not open with it.
// Migrate returns it when the destination holds another deployment's data.
var ErrWrongKey = errWrongKey

// MigrateOptions tune Migrate. The zero value copies every bucket, leaves
// the destination's extra keys alone and reports nothing along the way.
type MigrateOptions struct {
	// Prune deletes keys the destination has and the source has not (in
	// dialtone's buckets; on etcd nothing outside them, such as node
	// announcements, is touched). Without it they are left and counted
	// in MigrateStats.Extra.
	Prune bool
	// MaxOps bounds the writes of one destination transaction, counting on
	// etcd the version keys each write adds. Zero means 128 on etcd (its
	// default --max-txn-ops) and 10,000 on bbolt.
	MaxOps int
	// Progress, if set, is called after every committed batch and at the
	// end of each bucket with the running totals.
	Progress func(MigrateProgress)

	// failAfter, if positive, makes Migrate fail after that many batches
	// that wrote (tests: an interrupted run).
	failAfter int
}

// MigrateStats count what a migration did.
type MigrateStats struct {
	Copied    int // keys written (absent or different in the destination)
	Skipped   int // keys already equal in the destination
	Removed   int // destination keys not in the source, deleted (Prune)
	Extra     int // destination keys not in the source, left (no Prune)
	Sequences int // NextSequence counters raised to the source's
	Batches   int // destination transactions that wrote
}

// MigrateProgress is one report of Migrate's progress.
type MigrateProgress struct {
	Bucket     string
	BucketDone bool         // the bucket is complete
	Total      MigrateStats // every bucket so far
}

// errMigrateInjected is the failure MigrateOptions.failAfter injects.
var errMigrateInjected = errors.New("migrate: interrupted (injected by a test)")

// Migrate copies every bucket of from into to: keys and values byte for
// byte, bindings included (they are live registrations), and the buckets'
// NextSequence counters. Both stores must use the same secret.key (the
// sealed SIP passwords are copied as they are): a destination whose key
// check does not open with from's key is refused with an error matching
// ErrWrongKey, before anything is written. from is only read; to should
// not be serving (its caches do not follow the copy: close and reopen it).
func Migrate(from, to *DB, opts MigrateOptions) (MigrateStats, error) {
	var st MigrateStats
	if from == to {
		return st, errors.New("migrate: source and destination are the same store")
	}
	if from.aead == nil {
		return st, fmt.Errorf("migrate: the source has no usable %s (it is needed to check the destination belongs to the same deployment)", KeyFile)
	}
	if opts.MaxOps <= 0 {
		opts.MaxOps = 10_000
		if to.etcd != nil {
			opts.MaxOps = 128
		}
	}
	// The source's pure refreshes answered but not yet written belong in
	// the copy (a bbolt store opened for writing).
	if from.bolt != nil && !from.bolt.IsReadOnly() {
		if err := from.flushRefreshes(); err != nil {
			return st, fmt.Errorf("migrate: write the source's pending refreshes: %w", err)
		}
	}
	if err := checkMigrateKeys(from, to); err != nil {
		return st, err
	}
	buckets := append(allBuckets[:len(allBuckets):len(allBuckets)], extraBuckets...)
	err := guard("migrate", func() error {
		return from.kv.view(func(src kvTx) error {
			if err := checkSourceBuckets(src, buckets); err != nil {
				return err
			}
			if err := checkRecordVersions(src); err != nil {
				return fmt.Errorf("migrate: the source: %w", err)
			}
			for _, name := range buckets {
				if err := migrateBucket(src, to, name, &opts, &st); err != nil {
					return fmt.Errorf("migrate: bucket %s: %w", name, err)
				}
				if opts.Progress != nil {
					opts.Progress(MigrateProgress{Bucket: string(name), BucketDone: true, Total: st})
				}
			}
			return nil
		})
	})
	return st, err
}

// checkMigrateKeys refuses a source whose own key check does not open with
// its key, or whose format this build does not write, and a destination
// whose key check does not open with the source's key (another
// deployment's data: never mixed).
func checkMigrateKeys(from, to *DB) error {
	var schema, format, srcCheck, dstCheck []byte
	if err := from.kv.view(func(t kvTx) error {
		meta := t.Bucket(bMeta)
		schema = bytes.Clone(meta.Get([]byte("schema")))
		format = bytes.Clone(meta.Get([]byte(metaSealedFormat)))
		srcCheck = bytes.Clone(meta.Get([]byte(metaKeyCheck)))
		return nil
	}); err != nil {
		return fmt.Errorf("migrate: read the source: %w", err)
	}
	if string(schema) != strconv.Itoa(schemaVersion) || string(format) != string([]byte{'0' + sealV2}) || srcCheck == nil {
		return fmt.Errorf("migrate: the source has schema %q and sealed format %q, this build copies %d and %d: start dialtone (this release) on it once, stop it, then migrate", schema, format, schemaVersion, sealV2)
	}
	ad := secretAD("key_check", "", "")
	if plain, err := from.open(srcCheck, ad); err != nil || plain != keyCheckPlain {
		return fmt.Errorf("migrate: the source's %s does not open its own key check: %w", KeyFile, ErrWrongKey)
	}
	if err := to.kv.view(func(t kvTx) error {
		dstCheck = bytes.Clone(t.Bucket(bMeta).Get([]byte(metaKeyCheck)))
		return nil
	}); err != nil {
		return fmt.Errorf("migrate: read the destination: %w", err)
	}
	if dstCheck != nil {
		if plain, err := from.open(dstCheck, ad); err != nil || plain != keyCheckPlain {
			return fmt.Errorf("migrate: the destination holds another deployment's data (its key check does not open with the source's %s); refusing to mix them: %w", KeyFile, ErrWrongKey)
		}
	}
	return nil
}

// checkSourceBuckets refuses a bbolt source with a bucket this build does
// not know (written by a newer release): it would not be copied.
func checkSourceBuckets(src kvTx, known [][]byte) error {
	bt, ok := src.(boltTx)
	if !ok {
		return nil
	}
	return bt.ForEach(func(name []byte, _ *bolt.Bucket) error {
		if !slices.ContainsFunc(known, func(k []byte) bool { return bytes.Equal(k, name) }) {
			return fmt.Errorf("migrate: the source has a bucket %q this build does not know (written by a newer dialtone?): migrate with that release", name)
		}
		return nil
	})
}

// migrateBucket copies one bucket: its sequence first, then its keys in
// batches, each batch one destination transaction.
func migrateBucket(src kvTx, to *DB, name []byte, opts *MigrateOptions, st *MigrateStats) error {
	sb := src.Bucket(name)
	seq, err := bucketSequence(sb)
	if err != nil {
		return err
	}
	if seq > 0 {
		raised := false
		if err := to.kv.update(func(t kvTx) error {
			raised = false
			db := t.Bucket(name)
			have, err := bucketSequence(db)
			if err != nil || have >= seq {
				return err
			}
			raised = true
			return setBucketSequence(db, seq)
		}); err != nil {
			return fmt.Errorf("sequence: %w", err)
		}
		if raised {
			st.Sequences++
			if err := st.wrote(opts); err != nil {
				return err
			}
		}
	}
	var from []byte // every key below it is done; nil: the bucket's start
	for {
		var res batchResult
		if err := to.kv.update(func(t kvTx) error {
			var err error
			res, err = copyBatch(sb, t.Bucket(name), from, opts)
			return err
		}); err != nil {
			return err
		}
		st.Copied += res.copied
		st.Skipped += res.skipped
		st.Removed += res.removed
		st.Extra += res.extra
		if res.writes > 0 {
			if err := st.wrote(opts); err != nil {
				return err
			}
		}
		if opts.Progress != nil && res.next != nil {
			opts.Progress(MigrateProgress{Bucket: string(name), Total: *st})
		}
		if res.next == nil {
			return nil
		}
		from = res.next
	}
}

// wrote counts a committed batch (and injects the tests' failure).
func (st *MigrateStats) wrote(opts *MigrateOptions) error {
	st.Batches++
	if opts.failAfter > 0 && st.Batches >= opts.failAfter {
		return errMigrateInjected
	}
	return nil
}

// batchResult is what one batch did; next is where the following batch
// starts (nil: the bucket is done).
type batchResult struct {
	next                            []byte
	copied, skipped, removed, extra int
	writes                          int
}

// batchScan bounds the keys one batch looks at, so a run of equal keys
// still reports progress.
const batchScan = 10_000

// copyBatch walks the source and destination buckets together from from
// (inclusive) and writes what differs, until the write budget or the scan
// bound is reached. The walk comes first and the writes after it (a bbolt
// cursor is not to be used across writes to its bucket). It may run more
// than once (etcd re-runs a transaction that lost a conflict): it keeps no
// state between runs.
func copyBatch(sb, db kvBucket, from []byte, opts *MigrateOptions) (batchResult, error) {
	type write struct {
		key, val []byte
		del      bool
	}
	var (
		res      batchResult
		writes   []write
		ops      int
		versions = map[string]struct{}{}
	)
	// fits reports whether one more write of key fits the budget, and if
	// so counts it: the write and the version keys it adds on etcd. The
	// first write of a batch always fits (a budget below 4 still moves on).
	fits := func(key []byte) bool {
		vs := writeVersionKeys(key)
		n := 1
		for _, v := range vs {
			if _, ok := versions[v]; !ok {
				n++
			}
		}
		if ops+n > opts.MaxOps && ops > 0 {
			return false // the next batch takes it
		}
		ops += n
		for _, v := range vs {
			versions[v] = struct{}{}
		}
		return true
	}
	sc, dc := sb.Cursor(), db.Cursor()
	var sk, sv, dk, dv []byte
	if from == nil {
		sk, sv = sc.First()
		dk, dv = dc.First()
	} else {
		sk, sv = sc.Seek(from)
		dk, dv = dc.Seek(from)
	}
walk:
	for scanned := 0; sk != nil || dk != nil; scanned++ {
		if scanned == batchScan {
			res.next = bytes.Clone(lowerKey(sk, dk))
			break
		}
		switch c := compareKeys(sk, dk); {
		case c <= 0: // in the source (and perhaps the destination)
			if sv == nil && nestedBucket(sb, sk) {
				return res, fmt.Errorf("key %q is a nested bucket, which dialtone does not write", sk)
			}
			sv = forDest(sb, db, sv)
			if c == 0 && bytes.Equal(sv, dv) {
				res.skipped++
			} else {
				if !fits(sk) {
					res.next = bytes.Clone(sk)
					break walk
				}
				writes = append(writes, write{key: bytes.Clone(sk), val: sv})
				res.copied++
			}
			sk, sv = sc.Next()
			if c == 0 {
				dk, dv = dc.Next()
			}
		default: // only in the destination
			if opts.Prune {
				if !fits(dk) {
					res.next = bytes.Clone(dk)
					break walk
				}
				writes = append(writes, write{key: bytes.Clone(dk), del: true})
				res.removed++
			} else {
				res.extra++
			}
			dk, dv = dc.Next()
		}
	}
	for _, w := range writes {
		var err error
		if w.del {
			err = db.Delete(w.key)
		} else {
			err = db.Put(w.key, w.val)
		}
		if err != nil {
			return res, err
		}
	}
	res.writes = len(writes)
	return res, nil
}

// forDest is v, a record of bucket sb, as the destination bucket db keeps
// it. A binding copied from etcd into bbolt names no node: on one node
// every binding is its own (Binding.Node empty), and a row naming an etcd
// node would be taken for another node's, unreachable (sip/hop.go). Other
// records are copied as they are.
func forDest(sb, db kvBucket, v []byte) []byte {
	from, ok := sb.(*etcdBucket)
	if _, toBolt := db.(boltBucket); !ok || !toBolt || from.name != string(bBindings) {
		return v
	}
	var b Binding
	if decodeBinding(v, &b) != nil || b.Node == "" {
		return v
	}
	b.Node = ""
	return encodeBinding(&b)
}

// nestedBucket reports whether key in a bbolt bucket is a bucket (its
// cursor shows a nil value for both a bucket and, possibly, an empty value).
func nestedBucket(b kvBucket, key []byte) bool {
	bb, ok := b.(boltBucket)
	return ok && bb.Bucket.Bucket(key) != nil
}

// compareKeys orders two cursor positions, nil (the end) last.
func compareKeys(a, b []byte) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	return bytes.Compare(a, b)
}

// lowerKey is the lower of two cursor positions, nil (the end) last.
func lowerKey(a, b []byte) []byte {
	if compareKeys(a, b) <= 0 {
		return a
	}
	return b
}

// writeVersionKeys are the version keys a write of key adds on etcd, as
// etcdTx.commit puts them: the bucket's ("") and those of key's first two
// '/'-prefixes. Only their number matters here (the batch budget).
func writeVersionKeys(key []byte) []string {
	out := []string{""}
	end := 0
	for range 2 {
		i := bytes.IndexByte(key[end:], '/')
		if i < 0 {
			break
		}
		end += i + 1
		out = append(out, string(key[:end]))
	}
	return out
}

// bucketSequence is the bucket's NextSequence counter (the last id handed
// out; 0 if none).
func bucketSequence(b kvBucket) (uint64, error) {
	switch b := b.(type) {
	case boltBucket:
		return b.Sequence(), nil
	case missingBucket:
		return 0, nil
	case *etcdBucket:
		v := b.t.get(b.seqKey())
		if b.t.err != nil {
			return 0, b.t.err
		}
		var n uint64
		if v != nil {
			var err error
			if n, err = strconv.ParseUint(string(v), 10, 64); err != nil {
				return 0, damaged("sequence of %s is %q: the etcd data is damaged", b.name, v)
			}
		}
		// On etcd the counter is only a floor: NextSequence hands out
		// time-ordered ids above it without writing it. The ids in use are
		// the last 8 bytes of the keys of the buckets that take them.
		if b.name == string(bAudit) || b.name == string(bCalls) {
			err := b.ForEach(func(k, _ []byte) error {
				if len(k) > 9 && k[len(k)-9] == '/' {
					n = max(n, binary.BigEndian.Uint64(k[len(k)-8:]))
				}
				return nil
			})
			if err != nil {
				return 0, err
			}
		}
		return n, nil
	}
	return 0, fmt.Errorf("no sequence on a %T", b)
}

// setBucketSequence sets the counter: the next NextSequence returns n+1.
func setBucketSequence(b kvBucket, n uint64) error {
	switch b := b.(type) {
	case boltBucket:
		return b.SetSequence(n)
	case *etcdBucket:
		return b.t.write(b.seqKey(), etcdWrite{val: []byte(strconv.FormatUint(n, 10))})
	}
	return fmt.Errorf("cannot set the sequence of a %T", b)
}

// seqKey is the key of the bucket's counter (the layout at the top of
// etcd.go; etcdBucket.NextSequence reads and writes the same key).
func (b *etcdBucket) seqKey() string { return b.t.s.root + "_seq/" + b.name }
