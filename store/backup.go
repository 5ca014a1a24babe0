package store

import (
	"archive/tar"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// A backup is an uncompressed tar archive of two files, named as in the data
// directory: KeyFile (the key that decrypts SIP passwords) and FileName (a
// consistent snapshot of the bbolt file). Restoring both gives a working data
// directory; the archive is as secret as the directory itself (0600).

// maxKeyFile bounds the key entry of an archive (the key is 32 bytes).
const maxKeyFile = 4096

// BackupInfo describes a written backup.
type BackupInfo struct {
	DBBytes int64     // size of the database snapshot
	TxID    int       // bbolt transaction the snapshot shows
	Time    time.Time // when the snapshot was taken
}

// WriteBackup writes a backup archive of the open store to w: a consistent
// snapshot through one read transaction (bbolt's Tx.WriteTo), taken while
// writes go on. A snapshot transaction delays the growth of the data file
// (bbolt remaps it only when no reader is open), so very large stores are
// best backed up at a quiet hour.
//
// bbolt only: an etcd store is backed up with etcd's own snapshot (etcdctl
// snapshot save) plus secret.key.
func (db *DB) WriteBackup(w io.Writer) (BackupInfo, error) {
	if db.bolt == nil {
		return BackupInfo{}, errors.New("backup: this store is on etcd: take an etcd snapshot (etcdctl snapshot save) and keep secret.key with it")
	}
	key, err := os.ReadFile(filepath.Join(db.dir, KeyFile))
	if err != nil {
		return BackupInfo{}, fmt.Errorf("backup: read %s: %w", KeyFile, err)
	}
	// Pure refreshes answered but not yet written belong in the backup.
	if err := db.flushRefreshes(); err != nil {
		return BackupInfo{}, fmt.Errorf("backup: write pending refreshes: %w", err)
	}
	var info BackupInfo
	err = db.bolt.View(func(btx *bolt.Tx) error {
		return writeArchive(w, key, btx, &info, db.now())
	})
	return info, err
}

func writeArchive(w io.Writer, key []byte, btx *bolt.Tx, info *BackupInfo, now time.Time) error {
	tw := tar.NewWriter(w)
	hdr := func(name string, size int64) *tar.Header {
		return &tar.Header{Name: name, Mode: 0o600, Size: size, ModTime: now.UTC().Truncate(time.Second), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	}
	if err := tw.WriteHeader(hdr(KeyFile, int64(len(key)))); err != nil {
		return err
	}
	if _, err := tw.Write(key); err != nil {
		return err
	}
	*info = BackupInfo{DBBytes: btx.Size(), TxID: btx.ID(), Time: now}
	if err := tw.WriteHeader(hdr(FileName, btx.Size())); err != nil {
		return err
	}
	if _, err := btx.WriteTo(tw); err != nil {
		return fmt.Errorf("backup: snapshot: %w", err)
	}
	return tw.Close()
}

// BackupDir writes a backup archive of a data directory no process has open
// (dialtone stopped), opening it read-only. If dialtone runs on it, the
// error wraps ErrLocked: back it up through the admin API instead.
func BackupDir(dir string, w io.Writer) (BackupInfo, error) {
	db, err := OpenReadOnly(dir)
	if err != nil {
		return BackupInfo{}, err
	}
	defer db.Close()
	return db.WriteBackup(w)
}

// OpenReadOnly opens an existing data directory without changing anything:
// no file is created, nothing is pruned, and the shared lock lets other
// readers in but not a running dialtone. The secret key is loaded if it is
// there (KeyMissing reports when it is not). For inspection: Check, Stats,
// WriteBackup.
func OpenReadOnly(dir string) (*DB, error) {
	path := filepath.Join(dir, FileName)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db := &DB{bolt: bdb, kv: boltKV{bdb}, now: time.Now, maxContacts: 10, dir: dir, live: newLiveIndex()}
	db.initMemory()
	if err := guard("count bindings in "+path, db.loadLive); err != nil {
		guard("close", bdb.Close)
		return nil, err
	}
	if key, err := os.ReadFile(filepath.Join(dir, KeyFile)); err == nil && len(key) == 32 {
		if aead, err := readOnlyAEAD(key); err == nil {
			db.aead = aead
		}
	}
	return db, nil
}

// readOnlyAEAD is the cipher Open builds from the key.
func readOnlyAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// KeyMissing reports whether the store has no usable secret key (only a
// read-only open can be without one).
func (db *DB) KeyMissing() bool { return db.aead == nil }

// Restore unpacks a backup archive into dir, which must be empty or absent,
// then opens the result read-only and runs Check. Files are written under
// temporary names, fsynced and renamed; on any error nothing is left behind
// in dir.
func Restore(r io.Reader, dir string) (err error) {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("restore: %s is not empty (restore only into an empty or new directory)", dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("restore: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	var written []string
	defer func() {
		if err != nil {
			for _, name := range written {
				os.Remove(filepath.Join(dir, name))
			}
		}
	}()
	seen := map[string]bool{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("restore: not a complete dialtone backup: %w", err)
		}
		if h.Typeflag != tar.TypeReg || (h.Name != FileName && h.Name != KeyFile) || seen[h.Name] {
			return fmt.Errorf("restore: unexpected entry %q in the archive (a dialtone backup holds %s and %s once each)", h.Name, KeyFile, FileName)
		}
		if h.Name == KeyFile && h.Size > maxKeyFile {
			return fmt.Errorf("restore: %s in the archive is %d bytes", KeyFile, h.Size)
		}
		seen[h.Name] = true
		written = append(written, h.Name, h.Name+".restoring")
		if err := writeFileSynced(filepath.Join(dir, h.Name), tr, h.Size); err != nil {
			return fmt.Errorf("restore: %s: %w", h.Name, err)
		}
	}
	if !seen[FileName] || !seen[KeyFile] {
		return fmt.Errorf("restore: the archive lacks %s or %s", FileName, KeyFile)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return verifyRestored(dir)
}

// verifyRestored opens a restored directory read-only and checks it. A
// damaged file can make bbolt panic: that is reported as an error.
func verifyRestored(dir string) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("restore: the restored database is damaged: %v", v)
		}
	}()
	db, err := OpenReadOnly(dir)
	if err != nil {
		return fmt.Errorf("restore: the restored database does not open: %w", err)
	}
	defer db.Close()
	if db.KeyMissing() {
		return fmt.Errorf("restore: %s in the archive is not a 32-byte key", KeyFile)
	}
	if err := db.Check(); err != nil {
		return fmt.Errorf("restore: the restored database fails its check: %w", err)
	}
	return nil
}

// writeFileSynced writes exactly size bytes of r to path (0600) through a
// temporary name, fsynced before the rename.
func writeFileSynced(path string, r io.Reader, size int64) error {
	tmp := path + ".restoring"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(r, size))
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
