// Package lossyfs is a FUSE file system for tests that loses what a power cut
// would lose, the way LazyFS is used to test etcd and PostgreSQL.
//
// It is a loopback onto a backing directory. File contents written through
// the mount are kept in memory, page by page, until fsync or fdatasync on that
// file writes them to the backing file; Cut drops every write not yet synced
// and fails every later operation with EIO, as if the machine lost power at
// that instant. A fresh Mount of the same backing directory then shows exactly
// what a disk would hold after the reboot.
//
// The model is deliberately the strictest useful one for file contents and
// sizes (writes, truncations and extensions are all volatile until the file
// is synced). Names (create, rename, unlink, mkdir) go straight to the backing
// directory, as a journaling file system with ordered metadata would commit
// them with the next fsync of the file; a program that needs more than that
// from its directory is not tested by this.
//
// SetFull makes every write and extension fail with ENOSPC until it is
// cleared, for disk-full tests.
//
// Run the program under test as a separate process: a page fault on an mmap
// of a file on the mount (bbolt reads its file that way), taken by the
// process that serves the mount, deadlocks the Go runtime (the fault holds a
// thread the garbage collector must stop). Inspect what survived through the
// backing directory, or from another process.
//
// Linux only, and mounting needs root and /dev/fuse (Supported says why not).
package lossyfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

const pageSize = 4096

// Supported returns nil if this process can mount a FUSE file system, else
// why not (for a test's Skip message).
func Supported() error {
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("lossyfs needs /dev/fuse: %w", err)
	}
	f.Close()
	if os.Geteuid() != 0 {
		return errors.New("lossyfs mounts with mount(2) and needs root")
	}
	return nil
}

// FS is one mount of a backing directory.
type FS struct {
	mnt, backing string
	server       *fuse.Server

	dead      atomic.Bool // after Cut: every operation fails with EIO
	unmounted atomic.Bool
	full      atomic.Bool // SetFull: writes and extensions fail with ENOSPC

	mu      sync.Mutex
	pending map[uint64]*pending // backing inode → writes not yet synced
	syncs   int
}

// pending is a file's state since its last sync: its size and every page
// written (whole pages, as they are now).
type pending struct {
	size int64
	// zeroFrom: backing bytes at or after this offset were truncated away and
	// read as zeros (an unsynced shrink followed by a grow).
	zeroFrom int64
	pages    map[int64][]byte
}

// Mount mounts a lossy view of backing at mnt (both existing directories).
func Mount(mnt, backing string) (*FS, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		return nil, fmt.Errorf("lossyfs: backing directory: %w", err)
	}
	lfs := &FS{mnt: mnt, backing: backing, pending: map[uint64]*pending{}}
	loop, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return nil, fmt.Errorf("lossyfs: %w", err)
	}
	root := &node{LoopbackNode: loop.(*fs.LoopbackNode), lfs: lfs}
	root.RootData.RootNode = root
	sec := time.Second
	server, err := fs.Mount(mnt, root, &fs.Options{
		EntryTimeout: &sec, AttrTimeout: &sec, NegativeTimeout: &sec,
		MountOptions: fuse.MountOptions{
			FsName: "lossyfs", Name: "lossyfs", DirectMountStrict: true,
			// Every write reaches this process (no kernel writeback cache),
			// so nothing is acknowledged to the writer that we do not hold.
			DisableXAttrs: true,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("lossyfs: mount %s: %w", mnt, err)
	}
	lfs.server = server
	return lfs, nil
}

// Cut loses power: every write not yet synced is dropped and every later
// operation on this mount fails with EIO. Unmount, then Mount again to see
// what survived.
func (f *FS) Cut() {
	f.mu.Lock()
	f.dead.Store(true)
	f.pending = map[uint64]*pending{}
	f.mu.Unlock()
}

// SetFull makes writes fail with ENOSPC (true) or succeed again (false).
func (f *FS) SetFull(full bool) { f.full.Store(full) }

// Syncs counts the fsync/fdatasync calls that wrote something.
func (f *FS) Syncs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs
}

// Unmount unmounts the file system. Processes using it must be gone (killed
// after a Cut); it retries briefly while the kernel releases their files.
// Calling it again does nothing.
func (f *FS) Unmount() error {
	if f.unmounted.Swap(true) {
		return nil
	}
	var err error
	for i := 0; i < 50; i++ {
		if err = f.server.Unmount(); err == nil {
			f.server.Wait()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Last resort: detach it, so a test never leaves a mount behind.
	if derr := syscall.Unmount(f.mnt, syscall.MNT_DETACH); derr == nil {
		return nil
	}
	return fmt.Errorf("lossyfs: unmount %s: %w", f.mnt, err)
}

// node is a loopback node whose file contents go through FS.pending.
type node struct {
	*fs.LoopbackNode
	lfs *FS
}

// WrapChild makes every node the loopback creates (lookup, create, mkdir) a
// lossy one.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	if l, ok := ops.(*fs.LoopbackNode); ok {
		return &node{LoopbackNode: l, lfs: n.lfs}
	}
	return ops
}

// handle is an open file: a read-write descriptor of the backing file.
type handle struct{ f *os.File }

var (
	_ fs.NodeOpener    = (*node)(nil)
	_ fs.NodeCreater   = (*node)(nil)
	_ fs.NodeReader    = (*node)(nil)
	_ fs.NodeWriter    = (*node)(nil)
	_ fs.NodeWritever  = (*node)(nil)
	_ fs.NodeFsyncer   = (*node)(nil)
	_ fs.NodeFlusher   = (*node)(nil)
	_ fs.NodeReleaser  = (*node)(nil)
	_ fs.NodeGetattrer = (*node)(nil)
	_ fs.NodeSetattrer = (*node)(nil)
	_ fs.NodeAllocater = (*node)(nil)

	_ fs.NodeWrapChilder = (*node)(nil)
)

func (n *node) backingPath() string {
	return filepath.Join(n.RootData.Path, n.Path(n.RootData.RootNode.EmbeddedInode()))
}

func (n *node) ino() uint64 { return n.StableAttr().Ino }

// openBacking opens the backing file read-write whatever the caller asked:
// a later fsync through any descriptor writes every pending page.
func openBacking(path string, flags uint32) (*os.File, error) {
	fl := int(flags)&^(syscall.O_ACCMODE|syscall.O_TRUNC|syscall.O_APPEND|syscall.O_CREAT|syscall.O_EXCL|fuse.FMODE_EXEC) | syscall.O_RDWR
	return os.OpenFile(path, fl, 0)
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if n.lfs.dead.Load() {
		return nil, 0, syscall.EIO
	}
	f, err := openBacking(n.backingPath(), flags)
	if err != nil {
		return nil, 0, fs.ToErrno(err)
	}
	if flags&syscall.O_TRUNC != 0 {
		n.lfs.mu.Lock()
		n.lfs.truncate(n.ino(), f, 0)
		n.lfs.mu.Unlock()
	}
	return &handle{f: f}, 0, 0
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if n.lfs.dead.Load() {
		return nil, nil, 0, syscall.EIO
	}
	ch, lh, _, errno := n.LoopbackNode.Create(ctx, name, flags&^syscall.O_TRUNC, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	if c, ok := lh.(fs.FileReleaser); ok {
		c.Release(ctx)
	}
	f, err := openBacking(filepath.Join(n.backingPath(), name), flags)
	if err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	return ch, &handle{f: f}, 0, 0
}

// Names change on the backing directory at once (see the package comment),
// but not after a Cut.

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.lfs.dead.Load() {
		return nil, syscall.EIO
	}
	return n.LoopbackNode.Mkdir(ctx, name, mode, out)
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if n.lfs.dead.Load() {
		return syscall.EIO
	}
	return n.LoopbackNode.Unlink(ctx, name)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if n.lfs.dead.Load() {
		return syscall.EIO
	}
	return n.LoopbackNode.Rmdir(ctx, name)
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if n.lfs.dead.Load() {
		return syscall.EIO
	}
	return n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
}

func (n *node) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno { return 0 }

func (n *node) Release(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	if h, ok := fh.(*handle); ok {
		h.f.Close()
	}
	return 0
}

// file returns the handle's descriptor, or opens the backing file for the
// duration of one call when the kernel sent no handle.
func (n *node) file(fh fs.FileHandle) (*os.File, func(), error) {
	if h, ok := fh.(*handle); ok {
		return h.f, func() {}, nil
	}
	f, err := os.OpenFile(n.backingPath(), os.O_RDWR, 0)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

func (n *node) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if n.lfs.dead.Load() {
		return syscall.EIO
	}
	if h, ok := fh.(*handle); ok {
		var st syscall.Stat_t
		if err := syscall.Fstat(int(h.f.Fd()), &st); err != nil {
			return fs.ToErrno(err)
		}
		out.FromStat(&st)
	} else if errno := n.LoopbackNode.Getattr(ctx, nil, out); errno != 0 {
		return errno
	}
	n.lfs.mu.Lock()
	if p := n.lfs.pending[n.ino()]; p != nil {
		out.Size = uint64(p.size)
		out.Blocks = (out.Size + 511) / 512
	}
	n.lfs.mu.Unlock()
	return 0
}

func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.lfs.dead.Load() {
		return syscall.EIO
	}
	if sz, ok := in.GetSize(); ok {
		f, done, err := n.file(fh)
		if err != nil {
			return fs.ToErrno(err)
		}
		n.lfs.mu.Lock()
		errno := n.lfs.truncateChecked(n.ino(), f, int64(sz))
		n.lfs.mu.Unlock()
		done()
		if errno != 0 {
			return errno
		}
		in.Valid &^= fuse.FATTR_SIZE
	}
	// Mode, owner and times go to the backing file (metadata is not modelled).
	if in.Valid&^(fuse.FATTR_FH|fuse.FATTR_LOCKOWNER) != 0 {
		if errno := n.LoopbackNode.Setattr(ctx, nil, in, out); errno != 0 {
			return errno
		}
	}
	return n.Getattr(ctx, fh, out)
}

func (n *node) Allocate(ctx context.Context, fh fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	if n.lfs.dead.Load() {
		return syscall.EIO
	}
	if n.lfs.full.Load() {
		return syscall.ENOSPC
	}
	if mode != 0 {
		return syscall.EOPNOTSUPP
	}
	f, done, err := n.file(fh)
	if err != nil {
		return fs.ToErrno(err)
	}
	defer done()
	n.lfs.mu.Lock()
	defer n.lfs.mu.Unlock()
	p := n.lfs.state(n.ino(), f)
	if end := int64(off + size); end > p.size {
		p.size = end
	}
	return 0
}

func (n *node) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if n.lfs.dead.Load() {
		return nil, syscall.EIO
	}
	f, done, err := n.file(fh)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	defer done()
	n.lfs.mu.Lock()
	defer n.lfs.mu.Unlock()
	p := n.lfs.pending[n.ino()]
	if p == nil {
		m, _ := f.ReadAt(dest, off) // a short read is the end of the file
		return fuse.ReadResultData(dest[:m]), 0
	}
	if off >= p.size {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), p.size)
	for pos := off; pos < end; {
		idx := pos / pageSize
		pg := p.page(f, idx)
		in := pos - idx*pageSize
		c := copy(dest[pos-off:end-off], pg[in:])
		pos += int64(c)
	}
	return fuse.ReadResultData(dest[:end-off]), 0
}

func (n *node) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	return n.Writev(ctx, fh, [][]byte{data}, off)
}

func (n *node) Writev(ctx context.Context, fh fs.FileHandle, data [][]byte, off int64) (uint32, syscall.Errno) {
	if n.lfs.dead.Load() {
		return 0, syscall.EIO
	}
	if n.lfs.full.Load() {
		return 0, syscall.ENOSPC
	}
	f, done, err := n.file(fh)
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	defer done()
	n.lfs.mu.Lock()
	defer n.lfs.mu.Unlock()
	p := n.lfs.state(n.ino(), f)
	written := 0
	for _, b := range data {
		pos := off + int64(written)
		for i := 0; i < len(b); {
			idx := (pos + int64(i)) / pageSize
			pg := p.page(f, idx)
			p.pages[idx] = pg
			c := copy(pg[(pos+int64(i))-idx*pageSize:], b[i:])
			i += c
		}
		written += len(b)
	}
	if end := off + int64(written); end > p.size {
		p.size = end
	}
	return uint32(written), 0
}

// Fsync (and fdatasync) makes the file's pending writes durable: they are
// written to the backing file, which a Cut does not touch.
func (n *node) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if n.lfs.dead.Load() {
		return syscall.EIO
	}
	if !n.IsDir() {
		f, done, err := n.file(fh)
		if err != nil {
			return fs.ToErrno(err)
		}
		defer done()
		n.lfs.mu.Lock()
		defer n.lfs.mu.Unlock()
		if n.lfs.dead.Load() { // the power went while this sync waited
			return syscall.EIO
		}
		p := n.lfs.pending[n.ino()]
		if p == nil {
			return 0
		}
		if err := p.writeTo(f); err != nil {
			return fs.ToErrno(err)
		}
		delete(n.lfs.pending, n.ino())
		n.lfs.syncs++
	}
	return 0
}

// state returns the inode's pending state, starting one from the backing
// file's size. Callers hold f.mu.
func (lfs *FS) state(ino uint64, f *os.File) *pending {
	p := lfs.pending[ino]
	if p == nil {
		var size int64
		if fi, err := f.Stat(); err == nil {
			size = fi.Size()
		}
		p = &pending{size: size, zeroFrom: size, pages: map[int64][]byte{}}
		lfs.pending[ino] = p
	}
	return p
}

func (lfs *FS) truncateChecked(ino uint64, f *os.File, size int64) syscall.Errno {
	if lfs.full.Load() && size > lfs.state(ino, f).size {
		return syscall.ENOSPC
	}
	lfs.truncate(ino, f, size)
	return 0
}

// truncate sets the file's pending size. Callers hold lfs.mu.
func (lfs *FS) truncate(ino uint64, f *os.File, size int64) {
	p := lfs.state(ino, f)
	if size < p.size {
		for idx := range p.pages {
			if idx*pageSize >= size {
				delete(p.pages, idx)
			}
		}
		if in := size % pageSize; in != 0 {
			idx := size / pageSize
			pg := p.page(f, idx)
			clear(pg[in:])
			p.pages[idx] = pg
		}
		p.zeroFrom = min(p.zeroFrom, size)
	}
	p.size = size
}

// page returns page idx as the file holds it now (a copy when it comes from
// the backing file).
func (p *pending) page(f *os.File, idx int64) []byte {
	if pg, ok := p.pages[idx]; ok {
		return pg
	}
	pg := make([]byte, pageSize)
	start := idx * pageSize
	if start < p.zeroFrom {
		m, _ := f.ReadAt(pg, start)
		if lim := p.zeroFrom - start; int64(m) > lim {
			m = int(lim)
		}
		clear(pg[m:])
	}
	return pg
}

func (p *pending) writeTo(f *os.File) error {
	if err := f.Truncate(p.zeroFrom); err != nil {
		return err
	}
	if err := f.Truncate(p.size); err != nil {
		return err
	}
	for idx, pg := range p.pages {
		start := idx * pageSize
		if start >= p.size {
			continue
		}
		b := pg[:min(int64(pageSize), p.size-start)]
		if _, err := f.WriteAt(b, start); err != nil {
			return err
		}
	}
	return nil
}
