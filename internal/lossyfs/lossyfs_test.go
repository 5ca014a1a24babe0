package lossyfs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func mount(t *testing.T) (fsys *FS, mnt, backing string) {
	t.Helper()
	if err := Supported(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	mnt, backing = t.TempDir(), t.TempDir()
	fsys, err := Mount(mnt, backing)
	if err != nil {
		t.Skipf("skipping: cannot mount FUSE here: %v", err)
	}
	t.Cleanup(func() { fsys.Unmount() })
	return fsys, mnt, backing
}

func remount(t *testing.T, old *FS, mnt, backing string) *FS {
	t.Helper()
	if err := old.Unmount(); err != nil {
		t.Fatal(err)
	}
	fsys, err := Mount(mnt, backing)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsys.Unmount() })
	return fsys
}

// A cut keeps exactly what was fsynced or fdatasynced: later writes, an
// unsynced extension and an unsynced truncation are all lost.
func TestCutKeepsOnlySyncedData(t *testing.T) {
	fsys, mnt, backing := mount(t)
	path := filepath.Join(mnt, "f")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	synced := bytes.Repeat([]byte("a"), 10000) // spans pages, ends mid-page
	f.Write(synced)
	if err := syscall.Fdatasync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	// Unsynced: overwrite inside, extend, then read back through the mount.
	f.WriteAt([]byte("XYZ"), 4095)
	f.WriteAt([]byte("tail"), 20000)
	got := make([]byte, 20004)
	if n, _ := f.ReadAt(got, 0); n != 20004 || string(got[4095:4098]) != "XYZ" || string(got[20000:]) != "tail" || got[15000] != 0 {
		t.Fatalf("read-your-writes before the cut failed: n=%d", n)
	}
	if fi, _ := f.Stat(); fi.Size() != 20004 {
		t.Fatalf("size before the cut %d, want 20004", fi.Size())
	}
	// Nothing unsynced reached the backing file yet.
	if b, _ := os.ReadFile(filepath.Join(backing, "f")); !bytes.Equal(b, synced) {
		t.Fatalf("backing file holds unsynced data (%d bytes)", len(b))
	}
	fsys.Cut()
	if _, err := f.Write([]byte("x")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("write after the cut: %v, want EIO", err)
	}
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync after the cut: %v, want EIO", err)
	}
	f.Close()
	fsys = remount(t, fsys, mnt, backing)
	b, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(b, synced) {
		t.Fatalf("after the cut: %d bytes, err %v; want the 10000 synced bytes", len(b), err)
	}

	// An unsynced shrink then regrow reads zeros, and is lost by a cut.
	f, _ = os.OpenFile(path, os.O_RDWR, 0)
	f.Truncate(100)
	f.Truncate(8192)
	got = make([]byte, 8192)
	f.ReadAt(got, 0)
	if got[99] != 'a' || got[100] != 0 || got[5000] != 0 {
		t.Fatalf("shrink+grow reads %q %q %q", got[99], got[100], got[5000])
	}
	fsys.Cut()
	f.Close()
	fsys = remount(t, fsys, mnt, backing)
	if b, _ := os.ReadFile(path); !bytes.Equal(b, synced) {
		t.Fatalf("an unsynced truncation survived the cut (%d bytes)", len(b))
	}

	// A synced truncation and rewrite is kept.
	f, _ = os.OpenFile(path, os.O_RDWR|os.O_TRUNC, 0)
	f.WriteAt([]byte("new"), 0)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("lost"), 0)
	fsys.Cut()
	f.Close()
	fsys = remount(t, fsys, mnt, backing)
	if b, _ := os.ReadFile(path); string(b) != "new" {
		t.Fatalf("after a synced O_TRUNC and rewrite: %q, want \"new\"", b)
	}
	if fsys.Syncs() != 0 {
		t.Fatalf("a fresh mount counts %d syncs", fsys.Syncs())
	}
}

// SetFull fails writes with ENOSPC until cleared.
func TestFull(t *testing.T) {
	fsys, mnt, _ := mount(t)
	f, err := os.Create(filepath.Join(mnt, "g"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fsys.SetFull(true)
	if _, err := f.Write([]byte("x")); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write on a full disk: %v, want ENOSPC", err)
	}
	if err := f.Truncate(1 << 20); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("extension on a full disk: %v, want ENOSPC", err)
	}
	fsys.SetFull(false)
	if _, err := f.Write([]byte("x")); err != nil {
		t.Fatalf("write after space is freed: %v", err)
	}
	if err := f.Sync(); err != nil || fsys.Syncs() != 1 {
		t.Fatalf("sync: %v, %d syncs", err, fsys.Syncs())
	}
}
