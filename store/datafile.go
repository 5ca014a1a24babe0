package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"runtime/debug"
)

// ErrDamaged marks data this build cannot trust or cannot read: a truncated
// or emptied data file, a damaged page, a record in an unknown format, a
// secret.key that does not belong to the file. dialtone refuses to start on
// it (errors.Is(err, ErrDamaged)); each error's text says what to do.
var ErrDamaged = errors.New("data damaged")

type damageError struct{ msg string }

func (e *damageError) Error() string        { return e.msg }
func (e *damageError) Is(target error) bool { return target == ErrDamaged }

func damaged(format string, args ...any) error {
	return &damageError{msg: fmt.Sprintf(format, args...)}
}

// checkDataFile looks at dialtone.db before bbolt opens it, because bbolt
// turns a 0-byte file into a brand-new store and can fault on a truncated
// one. keyExists says whether secret.key is there: an empty data file next
// to a key is a failed copy or restore, not a first start.
func checkDataFile(path string, keyExists bool) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	size := st.Size()
	if size == 0 {
		if keyExists {
			return damaged("%s is empty (0 bytes) but %s exists: restore %s from a backup (to start a new store instead, move both files aside)", path, KeyFile, FileName)
		}
		return nil
	}
	head := make([]byte, 4096)
	if _, err := io.ReadFull(f, head); err != nil {
		return damaged("%s is truncated (%d bytes, less than one page): restore it from a backup", path, size)
	}
	m0, ok0 := parseMeta(head)
	pageSize := int64(os.Getpagesize())
	if ok0 {
		pageSize = int64(m0.pageSize)
	}
	var m1 boltMeta
	ok1 := false
	if size >= 2*pageSize {
		p1 := make([]byte, 4096)
		if _, err := f.ReadAt(p1, pageSize); err == nil {
			m1, ok1 = parseMeta(p1)
		}
	}
	m := m0
	switch {
	case ok0 && ok1 && m1.txid > m0.txid, !ok0 && ok1:
		m = m1
	case !ok0 && !ok1:
		return damaged("%s is not a dialtone data file or both of its headers are damaged: restore it from a backup", path)
	}
	if need := int64(m.pgid) * int64(m.pageSize); size < need {
		return damaged("%s is truncated (%d bytes, its header needs %d): restore it from a backup", path, size, need)
	}
	return nil
}

// boltMeta is the part of bbolt's meta page (page 0 and page 1, after the
// 16-byte page header) that tells how large the file must be.
type boltMeta struct {
	pageSize uint32
	pgid     uint64 // high-water mark: pages below it may be in use
	txid     uint64
}

// parseMeta validates one bbolt meta page (magic, version 2, FNV-64a
// checksum) in the machine's byte order, as bbolt writes it.
func parseMeta(page []byte) (boltMeta, bool) {
	const hdr, size = 16, 64
	if len(page) < hdr+size {
		return boltMeta{}, false
	}
	b := page[hdr : hdr+size]
	bo := binary.NativeEndian
	if bo.Uint32(b[0:]) != 0xED0CDAED || bo.Uint32(b[4:]) != 2 {
		return boltMeta{}, false
	}
	h := fnv.New64a()
	h.Write(b[:56])
	if h.Sum64() != bo.Uint64(b[56:]) {
		return boltMeta{}, false
	}
	m := boltMeta{pageSize: bo.Uint32(b[8:]), pgid: bo.Uint64(b[40:]), txid: bo.Uint64(b[48:])}
	if m.pageSize < 512 || m.pageSize > 1<<20 {
		return boltMeta{}, false
	}
	return m, true
}

// guard runs fn and turns a panic or a memory fault (a page of the mapped
// file that is not there) into an ErrDamaged error, so bad data is a clear
// refusal rather than a crash.
func guard(what string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = damaged("%s: the data file is damaged (%v): restore it from a backup", what, r)
		}
	}()
	return fn()
}
