package store

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	berrors "go.etcd.io/bbolt/errors"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The etcd backend. Key layout, under EtcdConfig.Prefix (P):
//
//	P/<bucket>/<key>      a record, exactly as bbolt keeps it in <bucket>
//	P/_seq/<bucket>       a floor for the bucket's NextSequence, in decimal
//	                      (written by earlier releases and by copies from
//	                      bbolt; new ids are time-ordered, see NextSequence)
//	P/_v/<bucket>/<pre>   a version key (empty value): every write of a key of
//	                      <bucket> puts the version keys of its first two
//	                      '/'-prefixes ("acct/", "acct/user/") and of the
//	                      bucket as a whole ("")
//
// A writable transaction reads at one revision (the first read fixes it)
// and buffers its writes; commit is one etcd Txn whose If compares every key
// it read (ModRevision as read, or CreateRevision 0 for a key that was
// absent) and, for every range it read, that the range's version key has not
// moved past the revision. So a rule commits only against the state it
// read, as under bbolt's single writer; when another node changed it, the
// whole rule runs again on a fresh transaction (at most
// EtcdConfig.MaxAttempts times, then ErrConflict).

// ErrConflict means a write lost to concurrent writes of the same records on
// every attempt (etcd). Nothing was written; the caller may try again.
var ErrConflict = errors.New("store: the records changed under every attempt (concurrent writes on other nodes); nothing was written, try again")

// EtcdConfig says where an etcd-backed store lives.
type EtcdConfig struct {
	Endpoints []string    // host:port or URLs of the cluster's members
	TLS       *tls.Config // nil: plain connections
	// Prefix is the root of every key; several dialtone deployments can
	// share a cluster under different prefixes. Empty means "/dialtone".
	Prefix string
	// Dir is this node's data directory. It holds secret.key, which
	// encrypts SIP passwords before they reach etcd: every node of a
	// deployment must have the same file (the first node creates it).
	Dir string
	// DialTimeout bounds the first connection; RequestTimeout each etcd
	// request. Zero means 5 s each.
	DialTimeout, RequestTimeout time.Duration
	// MaxAttempts bounds the runs of one write transaction that keeps
	// losing to concurrent writes. Zero means 32.
	MaxAttempts int
	// Node names this dialtone node among the deployment's nodes; the
	// bindings it writes carry it (Binding.Node) and it announces itself
	// under it (AnnounceNode). Unique per node and stable across its
	// restarts. Empty means the host name.
	Node string
	// LeaseTTL is the life of this node's etcd lease: the binding rows it
	// writes and its nodes/<id> key vanish this long after the node dies
	// (etcdlease.go). Whole seconds; zero means 15 s.
	LeaseTTL time.Duration
	// Logger receives the lease's events (lost, granted again); nil
	// discards them.
	Logger *slog.Logger
}

// OpenEtcd opens the store kept in an etcd cluster. Every node of a
// deployment opens the same cluster and prefix; the domain rules hold across
// them (a REGISTER on one node racing a DELETE of the user on another never
// leaves a live binding of a deleted user).
//
// Unlike Open, a pure refresh is answered from this node's memory and
// written only when its expiry passes the row's stored horizon (see
// refreshOverlay, "held"); a negative Options.RefreshWriteDelay writes every
// REGISTER instead. A rule may run more than once when another node changed
// what it read. The node's binding rows live on its lease (etcdlease.go).
func OpenEtcd(cfg EtcdConfig, opts Options) (*DB, error) {
	opts = withDefaults(opts)
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd store: no endpoints")
	}
	if cfg.Dir == "" {
		return nil, errors.New("etcd store: no data directory for secret.key")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "/dialtone"
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 32
	}
	if cfg.Node == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			return nil, errors.New("etcd store: no node name given and the host name is unknown")
		}
		cfg.Node = host
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 15 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	if strings.ContainsAny(cfg.Node, "/ \t\r\n") {
		return nil, fmt.Errorf("etcd store: node name %q: no '/' or spaces", cfg.Node)
	}
	where := fmt.Sprintf("etcd %s prefix %s", strings.Join(cfg.Endpoints, ","), cfg.Prefix)
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, TLS: cfg.TLS, DialTimeout: cfg.DialTimeout, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", where, err)
	}
	s := &etcdKV{cli: cli, root: strings.TrimSuffix(cfg.Prefix, "/") + "/", timeout: cfg.RequestTimeout, attempts: cfg.MaxAttempts,
		leaseTTL: cfg.LeaseTTL, log: cfg.Logger, leaseLost: make(chan struct{}, 1), leaseDone: make(chan struct{})}
	close(s.leaseDone) // no keeper yet
	fail := func(err error) (*DB, error) { s.close(); return nil, err }
	// Reach the cluster now, with a clear error, rather than at the first rule.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.DialTimeout)
	first, err := cli.Get(ctx, s.root+"meta/schema")
	cancel()
	if err != nil {
		return fail(fmt.Errorf("open %s: cannot reach the cluster: %w", where, err))
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return fail(fmt.Errorf("create data directory %s: %w", cfg.Dir, err))
	}
	keyPath := filepath.Join(cfg.Dir, KeyFile)
	key, err := readKey(keyPath)
	if err != nil {
		return fail(err)
	}
	if key == nil {
		var secrets bool
		if err := s.view(func(t kvTx) error { secrets = holdsSecrets(t); return nil }); err != nil {
			return fail(fmt.Errorf("open %s: %w", where, err))
		}
		if secrets {
			return fail(damaged("%s is missing but %s holds sealed secrets (SIP passwords) that only it can decrypt: copy secret.key from a node of this deployment", keyPath, where))
		}
		if key, err = createKey(keyPath); err != nil {
			return fail(err)
		}
	}
	aead, err := newAEAD(key)
	if err != nil {
		return fail(err)
	}
	db := newDB(opts, aead)
	db.kv, db.etcd, db.dir, db.node = s, s, cfg.Dir, cfg.Node
	s.node = cfg.Node
	db.refresh.delay = -1
	if opts.RefreshWriteDelay >= 0 {
		db.refresh.delay, db.refresh.held, db.refresh.node = 0, true, cfg.Node
		db.refresh.rows = map[string]*heldAOR{}
	}
	db.loop.stopped = nil // no commit loop: batch is update
	id, err := s.grantLease(context.Background())
	if err != nil {
		return fail(fmt.Errorf("open %s: grant this node's lease: %w", where, err))
	}
	s.lease.Store(int64(id))
	ctx, stop := context.WithCancel(context.Background())
	s.stopLease, s.leaseDone = stop, make(chan struct{})
	go db.keepLease(ctx)
	s.settle = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 4*s.timeout)
		defer cancel()
		if n, err := db.settleRows(ctx); err != nil || n > 0 {
			s.log.Info("etcd store closing: bindings' true expiries written", "node", db.node, "rows", n, "err", err)
		}
		if s.announced.Load() != nil {
			// Leaving the node list at once: no other node sends this
			// one requests meanwhile (a restart announces it again).
			if _, err := cli.Delete(ctx, s.root+"nodes/"+db.node); err != nil {
				s.log.Warn("etcd store closing: cannot leave the node list; the entry goes with the lease", "node", db.node, "err", err)
			}
		}
	}
	if err := guard("initialise "+where, func() error {
		return db.update(func(t *tx) error { return db.initRecords(t, where) })
	}); err != nil {
		s.close()
		if errors.Is(err, ErrDamaged) || errors.Is(err, errWrongKey) {
			return nil, err
		}
		return nil, fmt.Errorf("initialise %s: %w", where, err)
	}
	if err := db.loadAndPrune(where); err != nil {
		s.close()
		return nil, err
	}
	// A restart: the rows this node wrote before move onto its new lease.
	adopt, rev := s.adopt, s.adoptRev
	s.adopt = nil
	if n, err := db.adoptRows(context.Background(), adopt, rev, id); err != nil {
		s.close()
		return nil, fmt.Errorf("open %s: adopt this node's bindings: %w", where, err)
	} else if n > 0 {
		s.log.Info("etcd store: bindings of this node's previous run adopted", "node", db.node, "rows", n)
	}
	db.etcd.watched.Store(first.Header.Revision + 1)
	go db.watchEtcd(first.Header.Revision + 1)
	return db, nil
}

// ErrUnavailable means the etcd cluster did not answer in time (no quorum,
// unreachable): nothing was written; the caller may try again.
var ErrUnavailable = errors.New("store: the etcd cluster did not answer (unreachable or without a quorum); nothing was written, try again")

// unavailable marks err with ErrUnavailable when it says etcd did not
// answer (a timeout, no connection, no leader), not that it refused.
func unavailable(err error) error {
	code := status.Code(err)
	if errors.Is(err, context.DeadlineExceeded) || code == codes.Unavailable || code == codes.DeadlineExceeded ||
		errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrTimeout) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// owns reports whether the binding row v names this node (Binding.Node).
func (s *etcdKV) owns(v []byte) bool {
	var b Binding
	return s.node != "" && decodeBinding(v, &b) == nil && b.Node == s.node
}

// watchEtcd follows every change under the prefix from rev on, this node's
// and the others': a change of a user, password, domain or account drops
// the identities it may make stale (the digest check then reads the store
// again), and any change outside bindings, call records and the audit log
// moves Generation (other caches). Changes made through other nodes are
// seen within the watch's delivery delay (milliseconds), not at their
// commit. It returns when the store closes.
func (db *DB) watchEtcd(rev int64) {
	s := db.etcd
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	defer cancel()
	for !s.closed.Load() {
		for resp := range s.cli.Watch(ctx, s.root, clientv3.WithPrefix(), clientv3.WithRev(rev)) {
			if resp.CompactRevision > 0 || resp.Err() != nil {
				// Events were missed: forget every identity.
				rev = max(resp.CompactRevision, resp.Header.Revision+1)
				db.identities.forgetAll()
				db.gen.Add(1)
				break
			}
			for _, ev := range resp.Events {
				db.etcdChanged(string(ev.Kv.Key))
			}
			rev = resp.Header.Revision + 1
			s.watched.Store(rev)
		}
		if !s.closed.Load() {
			time.Sleep(100 * time.Millisecond) // the cluster lost its leader: watch again
		}
	}
}

// etcdChanged is watchEtcd's reaction to one changed key.
func (db *DB) etcdChanged(key string) {
	bucket, rest, _ := strings.Cut(strings.TrimPrefix(key, db.etcd.root), "/")
	switch bucket {
	case "bindings", "calls", "audit", "_v", "_seq", "trusted_sources", "nodes":
		return
	case "users", "secrets":
		acct, user, _ := strings.Cut(rest, "/")
		db.identities.forgetUser(acct, user)
	case "accounts":
		db.identities.forgetAccount(rest)
	case "domains": // (an extension moves with its user's record: "users")
		db.identities.forgetAll()
	}
	db.gen.Add(1)
}

// etcdKV runs transactions against one etcd prefix.
type etcdKV struct {
	cli      *clientv3.Client
	root     string // Prefix + "/"
	timeout  time.Duration
	attempts int

	closeOnce sync.Once
	closed    atomic.Bool
	// Counters for tests and operators: transactions that wrote, and runs
	// lost to a conflict.
	commits, conflicts atomic.Uint64
	// lastSeq is the newest id NextSequence handed out (nextSeq).
	lastSeq atomic.Uint64
	// beforeCommit, if set, runs after a transaction's rule and before its
	// commit (tests use it to make two nodes' transactions overlap).
	beforeCommit atomic.Pointer[func()]
	// watched is the revision the watch has applied up to (exclusive).
	watched atomic.Int64

	node string // this node's id (Binding.Node of the rows on its lease)
	// The node lease (etcdlease.go): its id, 0 while there is none.
	lease     atomic.Int64
	leaseTTL  time.Duration
	leaseLost chan struct{} // a put found the lease gone: the keeper replaces it
	leaseDone chan struct{} // closed when the keeper returns
	stopLease context.CancelFunc
	announced atomic.Pointer[string] // what AnnounceNode put, for a new lease

	// afterReput, if set (tests), runs in takeLease between the re-put
	// and the restore.
	afterReput atomic.Pointer[func()]
	// adopt are the rows naming this node that Open found (loadLive), read
	// at adoptRev, for adoptRows.
	adopt    []etcdRow
	adoptRev int64
	// settle, run by a graceful close, writes the true expiries of this
	// node's rows (nil: a store that failed to open; noSettle: a crash).
	settle   func()
	noSettle atomic.Bool
	log      *slog.Logger
}

func (s *etcdKV) close() error {
	var err error
	s.closeOnce.Do(func() {
		if s.settle != nil && !s.noSettle.Load() {
			s.settle()
		}
		s.closed.Store(true)
		if s.stopLease != nil {
			s.stopLease()
		}
		<-s.leaseDone
		err = s.cli.Close() // the lease is not revoked: see etcdlease.go
	})
	return err
}

func (s *etcdKV) begin(writable bool) *etcdTx {
	return &etcdTx{s: s, writable: writable}
}

func (s *etcdKV) view(fn func(kvTx) error) error {
	if s.closed.Load() {
		return berrors.ErrDatabaseNotOpen
	}
	t := s.begin(false)
	err := fn(t)
	if t.err != nil {
		return t.err
	}
	return err
}

// viewLocal is view with serializable reads: the member the client talks
// to answers from what it has applied, without a quorum round, so a read
// may miss a commit of the last few milliseconds (see DB.viewLocal).
func (s *etcdKV) viewLocal(fn func(kvTx) error) error {
	if s.closed.Load() {
		return berrors.ErrDatabaseNotOpen
	}
	t := s.begin(false)
	t.local = true
	err := fn(t)
	if t.err != nil {
		return t.err
	}
	return err
}

func (s *etcdKV) update(fn func(kvTx) error) error {
	for attempt := 1; ; attempt++ {
		if s.closed.Load() {
			return berrors.ErrDatabaseNotOpen
		}
		t := s.begin(true)
		err := fn(t)
		retry := false
		switch {
		case t.err != nil && errors.Is(t.err, rpctypes.ErrCompacted):
			retry = true // the revision read at is gone: read again
		case t.err != nil:
			return t.err // a failed read: what fn concluded cannot be trusted
		case err != nil:
			return err
		default:
			if f := s.beforeCommit.Load(); f != nil && len(t.writes) > 0 {
				(*f)()
			}
			ok, err := t.commit()
			if err != nil {
				return err
			}
			if ok {
				for _, f := range t.onCommit {
					f()
				}
				return nil
			}
			retry = true
		}
		if retry {
			s.conflicts.Add(1)
			if attempt >= s.attempts {
				return ErrConflict
			}
			// Jittered backoff, growing to 50 ms: two nodes that
			// conflicted do not meet again at once.
			d := min(time.Duration(1<<min(attempt, 16))*100*time.Microsecond, 50*time.Millisecond)
			time.Sleep(rand.N(d) + d/2)
		}
	}
}

// etcdTx is one attempt of a transaction.
type etcdTx struct {
	s        *etcdKV
	writable bool
	local    bool  // serializable reads (viewLocal)
	rev      int64 // the revision every read is at; 0 until the first read
	err      error // the first failed read; the transaction's outcome

	committed int64 // the revision of its commit (0: none, or nothing written)

	reads    map[string]etcdRead    // full key → what was read
	ranges   map[string]struct{}    // version keys of ranges read
	writes   map[string]etcdWrite   // full key → buffered write
	wseq     int                    // bumped on every write (cursors' local view)
	fresh    map[string]uint64      // bucket → the id NextSequence gave last (freshKey)
	buckets  map[string]*etcdBucket // by name
	onCommit []func()
}

type etcdRead struct {
	mod int64 // ModRevision at rev; 0 if absent
	val []byte
}

type etcdWrite struct {
	bucket string // "" for keys outside buckets (sequences)
	rel    string // key within the bucket
	val    []byte
	del    bool
}

func (t *etcdTx) OnCommit(fn func()) { t.onCommit = append(t.onCommit, fn) }

func (t *etcdTx) Bucket(name []byte) kvBucket {
	if b, ok := t.buckets[string(name)]; ok {
		return b
	}
	if t.buckets == nil {
		t.buckets = map[string]*etcdBucket{}
	}
	n := string(name)
	p := t.s.root + n + "/"
	b := &etcdBucket{t: t, name: n, pre: p, end: t.s.root + n + "0"} // '0' follows '/'
	t.buckets[n] = b
	return b
}

func (t *etcdTx) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), t.s.timeout)
}

// rangeGet is one Get at the transaction's revision (fixing it if first).
func (t *etcdTx) rangeGet(key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if t.err != nil {
		return nil, t.err
	}
	if t.rev > 0 {
		opts = append(opts, clientv3.WithRev(t.rev))
	}
	ctx, cancel := t.ctx()
	defer cancel()
	if t.local {
		// A member cut off from the others keeps answering serializable
		// reads from what it had: with require-leader it refuses instead
		// (no leader), and the refresh takes the slow path.
		opts = append(opts, clientv3.WithSerializable())
		ctx = clientv3.WithRequireLeader(ctx)
	}
	resp, err := t.s.cli.Get(ctx, key, opts...)
	if err != nil {
		if t.s.closed.Load() {
			err = berrors.ErrDatabaseNotOpen
		}
		t.err = fmt.Errorf("etcd: read %q: %w", strings.TrimPrefix(key, t.s.root), unavailable(err))
		return nil, t.err
	}
	if t.rev == 0 {
		t.rev = resp.Header.Revision
	}
	return resp, nil
}

// get reads one full key: this transaction's own write, or the cluster at
// rev (recorded for the commit's compare).
func (t *etcdTx) get(key string) []byte {
	if w, ok := t.writes[key]; ok {
		if w.del {
			return nil
		}
		return w.val
	}
	if r, ok := t.reads[key]; ok {
		return r.val
	}
	resp, err := t.rangeGet(key)
	if err != nil {
		return nil
	}
	var r etcdRead
	if len(resp.Kvs) == 1 {
		r = etcdRead{mod: resp.Kvs[0].ModRevision, val: resp.Kvs[0].Value}
		if r.val == nil {
			r.val = []byte{}
		}
	}
	if t.reads == nil {
		t.reads = map[string]etcdRead{}
	}
	t.reads[key] = r
	return r.val
}

func (t *etcdTx) write(key string, w etcdWrite) error {
	if !t.writable {
		return berrors.ErrTxNotWritable
	}
	if t.writes == nil {
		t.writes = map[string]etcdWrite{}
	}
	t.writes[key] = w
	t.wseq++
	return nil
}

// protect records that the transaction read every key of bucket starting
// with prefix (within the bucket): it commits only if none changed.
func (t *etcdTx) protect(bucket, prefix string) {
	if !t.writable {
		return
	}
	if t.ranges == nil {
		t.ranges = map[string]struct{}{}
	}
	t.ranges[t.s.root+"_v/"+bucket+"/"+versionPrefix(prefix)] = struct{}{}
}

// versionPrefix cuts p after its second '/' (or its first, or to ""): the
// version keys are kept at those depths ("acct/", "acct/user/").
func versionPrefix(p string) string {
	end := 0
	for range 2 {
		i := strings.IndexByte(p[end:], '/')
		if i < 0 {
			break
		}
		end += i + 1
	}
	return p[:end]
}

// commit writes the buffered writes if nothing read changed; false means a
// conflict (run the transaction again).
func (t *etcdTx) commit() (bool, error) {
	if len(t.writes) == 0 {
		return true, nil // read-only: every read was at one revision
	}
	var cmps []clientv3.Cmp
	for key, r := range t.reads {
		if r.mod == 0 {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", r.mod))
		}
	}
	for vk := range t.ranges {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(vk), "<", t.rev+1))
	}
	keys := make([]string, 0, len(t.writes))
	for key := range t.writes {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	ops := make([]clientv3.Op, 0, len(keys)+4)
	bumps := map[string]struct{}{}
	var lease clientv3.LeaseID
	for _, key := range keys {
		w := t.writes[key]
		switch {
		case w.del:
			ops = append(ops, clientv3.OpDelete(key))
		case w.bucket == string(bBindings) && t.s.owns(w.val):
			// A binding row lives on the lease of the node that holds its
			// flow, this one (etcdlease.go). A row naming no node or another
			// (one copied by dialtone migrate) is put as it is: it lives
			// until its expiry, not until this process stops.
			if lease = clientv3.LeaseID(t.s.lease.Load()); lease == 0 {
				return false, ErrNoLease
			}
			ops = append(ops, clientv3.OpPut(key, string(w.val), clientv3.WithLease(lease)))
		default:
			ops = append(ops, clientv3.OpPut(key, string(w.val)))
		}
		if w.bucket == "" {
			continue
		}
		vk := t.s.root + "_v/" + w.bucket + "/"
		bumps[vk] = struct{}{}
		for end, d := 0, 0; d < 2; d++ {
			i := strings.IndexByte(w.rel[end:], '/')
			if i < 0 {
				break
			}
			end += i + 1
			bumps[vk+w.rel[:end]] = struct{}{}
		}
	}
	for _, vk := range slices.Sorted(mapKeys(bumps)) {
		ops = append(ops, clientv3.OpPut(vk, ""))
	}
	ctx, cancel := t.ctx()
	defer cancel()
	resp, err := t.s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		if t.s.closed.Load() {
			return false, berrors.ErrDatabaseNotOpen
		}
		if lease != 0 {
			if err := t.s.leaseLostOnPut(err, lease); errors.Is(err, ErrNoLease) {
				return false, err
			}
		}
		return false, fmt.Errorf("etcd: commit: %w", unavailable(err))
	}
	if resp.Succeeded {
		t.s.commits.Add(1)
		t.committed = resp.Header.Revision
	}
	return resp.Succeeded, nil
}

func mapKeys(m map[string]struct{}) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// etcdBucket is a bucket of an etcdTx.
type etcdBucket struct {
	t    *etcdTx
	name string
	pre  string // root + name + "/"
	end  string // the first key after the bucket
	// local is the sorted full keys of this bucket's buffered writes, as of
	// t.wseq == localSeq.
	local    []string
	localSeq int
}

func (b *etcdBucket) Get(key []byte) []byte { return b.t.get(b.pre + string(key)) }

func (b *etcdBucket) Put(key, value []byte) error {
	if len(key) == 0 {
		return berrors.ErrKeyRequired
	}
	b.freshKey(key)
	return b.t.write(b.pre+string(key), etcdWrite{bucket: b.name, rel: string(key), val: append([]byte{}, value...)})
}

func (b *etcdBucket) Delete(key []byte) error {
	return b.t.write(b.pre+string(key), etcdWrite{bucket: b.name, rel: string(key), del: true})
}

func (b *etcdBucket) ForEach(fn func(k, v []byte) error) error {
	return b.ForEachPrefix(nil, fn)
}

// ForEachPrefix reads the whole range (in pages), merges this transaction's
// own writes, then calls fn.
func (b *etcdBucket) ForEachPrefix(prefix []byte, fn func(k, v []byte) error) error {
	t := b.t
	from := b.pre + string(prefix)
	to := clientv3.GetPrefixRangeEnd(from)
	t.protect(b.name, string(prefix))
	var remote []*mvccpb.KeyValue
	for start := from; ; {
		resp, err := t.rangeGet(start, clientv3.WithRange(to), clientv3.WithLimit(etcdPage),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		if err != nil {
			return err
		}
		remote = append(remote, resp.Kvs...)
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	local := b.localKeys()
	i := sort.SearchStrings(local, from)
	j := 0
	for i < len(local) && local[i] < to || j < len(remote) {
		var key string
		var val []byte
		switch {
		case j >= len(remote) || i < len(local) && local[i] < to && local[i] <= string(remote[j].Key):
			key = local[i]
			if j < len(remote) && string(remote[j].Key) == key {
				j++
			}
			i++
			w := t.writes[key]
			if w.del {
				continue
			}
			val = w.val
		default:
			key, val = string(remote[j].Key), remote[j].Value
			j++
		}
		if err := fn([]byte(key[len(b.pre):]), val); err != nil {
			return err
		}
	}
	return nil
}

// etcdPage is how many keys one range read fetches.
const etcdPage = 1000

// localKeys are the full keys of the bucket's buffered writes, sorted.
func (b *etcdBucket) localKeys() []string {
	if b.localSeq == b.t.wseq && b.local != nil {
		return b.local
	}
	b.local = b.local[:0]
	for key, w := range b.t.writes {
		if w.bucket == b.name {
			b.local = append(b.local, key)
		}
	}
	sort.Strings(b.local)
	if b.local == nil {
		b.local = []string{}
	}
	b.localSeq = b.t.wseq
	return b.local
}

func (b *etcdBucket) NextSequence() (uint64, error) {
	// Not a counter: a counter key that every writer of the bucket reads
	// and compares is one hot key, and concurrent audit or call writes on
	// any node lose to each other until ErrConflict. The id is this
	// process's clock in microseconds, above every id it handed out before
	// and above the bucket's counter as written by releases that kept one
	// (or by a copy from bbolt): ids grow with time on every node, so a
	// listing by id is newest-last across nodes as well. Two nodes may pick
	// the same id in the same microsecond: the Put of a key ending in a
	// fresh id compares that the key is absent, so the later commit runs
	// its rule again with a new id rather than overwrite (Put, freshKey).
	if !b.t.writable {
		return 0, berrors.ErrTxNotWritable
	}
	floor := uint64(0)
	if v := b.t.get(b.t.s.root + "_seq/" + b.name); v != nil {
		var err error
		if floor, err = strconv.ParseUint(string(v), 10, 64); err != nil {
			return 0, damaged("sequence of %s is %q: the etcd data is damaged", b.name, v)
		}
	}
	if b.t.err != nil {
		return 0, b.t.err
	}
	n := b.t.s.nextSeq(floor)
	if b.t.fresh == nil {
		b.t.fresh = map[string]uint64{}
	}
	b.t.fresh[b.name] = n
	return n, nil
}

// nextSeq is a time-ordered id above floor and above every id handed out
// by this process (see etcdBucket.NextSequence).
func (s *etcdKV) nextSeq(floor uint64) uint64 {
	for {
		last := s.lastSeq.Load()
		n := max(uint64(time.Now().UnixMicro()), last+1, floor+1)
		if s.lastSeq.CompareAndSwap(last, n) {
			return n
		}
	}
}

// freshKey records that key, put in bucket b, must not exist yet when it
// ends in the id NextSequence just gave: the commit compares its absence.
func (b *etcdBucket) freshKey(key []byte) {
	n, ok := b.t.fresh[b.name]
	if !ok || len(key) < 8 || binary.BigEndian.Uint64(key[len(key)-8:]) != n {
		return
	}
	full := b.pre + string(key)
	if _, read := b.t.reads[full]; read {
		return
	}
	if b.t.reads == nil {
		b.t.reads = map[string]etcdRead{}
	}
	b.t.reads[full] = etcdRead{} // absent: compared as CreateRevision = 0
}

// count is the number of keys in the bucket as of the transaction's
// revision (its own writes not included).
func (b *etcdBucket) count() (int, error) {
	resp, err := b.t.rangeGet(b.pre, clientv3.WithRange(b.end), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return int(resp.Count), nil
}

func (b *etcdBucket) Cursor() kvCursor { return &etcdCursor{b: b} }

// etcdCursor walks the bucket: the cluster's keys at the transaction's
// revision, fetched a page at a time, merged with the transaction's own
// writes. In a writable transaction it protects the span it looked at.
type etcdCursor struct {
	b     *etcdBucket
	cur   string // full key; valid if ok
	ok    bool
	page  []*mvccpb.KeyValue // sorted; every key of the bucket in [lo, hi)
	lo    string
	hi    string
	spanL string // the span looked at ("" below: from the bucket's start)
	spanH string // ("" above: to its end)
	moved bool
}

func (c *etcdCursor) First() ([]byte, []byte) { return c.after(c.b.pre) }
func (c *etcdCursor) Last() ([]byte, []byte)  { return c.below(c.b.end) }
func (c *etcdCursor) Seek(seek []byte) ([]byte, []byte) {
	return c.after(c.b.pre + string(seek))
}

func (c *etcdCursor) Next() ([]byte, []byte) {
	if !c.ok {
		return nil, nil
	}
	return c.after(c.cur + "\x00")
}

func (c *etcdCursor) Prev() ([]byte, []byte) {
	if !c.ok {
		return nil, nil
	}
	return c.below(c.cur)
}

// after lands on the first key at or after s.
func (c *etcdCursor) after(s string) ([]byte, []byte) {
	from := s
	for {
		rk, rv, rok := c.remoteAfter(s)
		lk, lw, lok := c.localAfter(s)
		if lok && (!rok || lk <= rk) {
			if lw.del {
				s = lk + "\x00"
				continue
			}
			rk, rv, rok = lk, lw.val, true
		}
		if !rok {
			c.look(from, "")
			return c.land("", nil, false)
		}
		c.look(from, rk)
		return c.land(rk, rv, true)
	}
}

// below lands on the last key before s.
func (c *etcdCursor) below(s string) ([]byte, []byte) {
	to := s
	for {
		rk, rv, rok := c.remoteBelow(s)
		lk, lw, lok := c.localBelow(s)
		if lok && (!rok || lk >= rk) {
			if lw.del {
				s = lk
				continue
			}
			rk, rv, rok = lk, lw.val, true
		}
		if !rok {
			c.look("", to)
			return c.land("", nil, false)
		}
		c.look(rk, to)
		return c.land(rk, rv, true)
	}
}

func (c *etcdCursor) land(key string, v []byte, ok bool) ([]byte, []byte) {
	c.cur, c.ok = key, ok
	if !ok {
		return nil, nil
	}
	return []byte(key[len(c.b.pre):]), v
}

// look widens the span looked at to [lo, hi] ("" for open ends) and
// protects it.
func (c *etcdCursor) look(lo, hi string) {
	if !c.b.t.writable {
		return
	}
	if !c.moved {
		c.spanL, c.spanH, c.moved = lo, hi, true
	} else {
		if lo == "" || c.spanL != "" && lo < c.spanL {
			c.spanL = lo
		}
		if hi == "" || c.spanH != "" && hi > c.spanH {
			c.spanH = hi
		}
	}
	p := ""
	if c.spanL != "" && c.spanH != "" {
		a, b := c.spanL[len(c.b.pre):], c.spanH[min(len(c.b.pre), len(c.spanH)):]
		n := 0
		for n < len(a) && n < len(b) && a[n] == b[n] {
			n++
		}
		p = a[:n]
	}
	c.b.t.protect(c.b.name, p)
}

func (c *etcdCursor) remoteAfter(s string) (string, []byte, bool) {
	for {
		if c.page != nil && c.lo <= s && s < c.hi {
			i := sort.Search(len(c.page), func(i int) bool { return string(c.page[i].Key) >= s })
			if i < len(c.page) {
				return string(c.page[i].Key), c.page[i].Value, true
			}
			if c.hi == c.b.end {
				return "", nil, false
			}
			s = c.hi
		}
		if s >= c.b.end {
			return "", nil, false
		}
		resp, err := c.b.t.rangeGet(s, clientv3.WithRange(c.b.end), clientv3.WithLimit(etcdPage),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		if err != nil {
			return "", nil, false
		}
		c.page, c.lo, c.hi = resp.Kvs, s, c.b.end
		if resp.More && len(resp.Kvs) > 0 {
			c.hi = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		}
		if c.page == nil {
			c.page = []*mvccpb.KeyValue{}
		}
	}
}

func (c *etcdCursor) remoteBelow(s string) (string, []byte, bool) {
	for {
		if c.page != nil && c.lo < s && s <= c.hi {
			i := sort.Search(len(c.page), func(i int) bool { return string(c.page[i].Key) >= s }) - 1
			if i >= 0 {
				return string(c.page[i].Key), c.page[i].Value, true
			}
			if c.lo == c.b.pre {
				return "", nil, false
			}
			s = c.lo
		}
		if s <= c.b.pre {
			return "", nil, false
		}
		resp, err := c.b.t.rangeGet(c.b.pre, clientv3.WithRange(s), clientv3.WithLimit(etcdPage),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
		if err != nil {
			return "", nil, false
		}
		kvs := slices.Clone(resp.Kvs)
		slices.Reverse(kvs)
		c.page, c.lo, c.hi = kvs, c.b.pre, s
		if resp.More && len(kvs) > 0 {
			c.lo = string(kvs[0].Key)
		}
		if c.page == nil {
			// Nothing below s: an empty page, not "no page", or the loop
			// would fetch the same empty range for ever.
			c.page = []*mvccpb.KeyValue{}
		}
	}
}

func (c *etcdCursor) localAfter(s string) (string, etcdWrite, bool) {
	local := c.b.localKeys()
	if i := sort.SearchStrings(local, s); i < len(local) {
		return local[i], c.b.t.writes[local[i]], true
	}
	return "", etcdWrite{}, false
}

func (c *etcdCursor) localBelow(s string) (string, etcdWrite, bool) {
	local := c.b.localKeys()
	if i := sort.SearchStrings(local, s) - 1; i >= 0 {
		return local[i], c.b.t.writes[local[i]], true
	}
	return "", etcdWrite{}, false
}

// etcdStats are the etcd transactions that wrote, and the runs lost to a
// conflict, since the store was opened (zero on bbolt).
func (db *DB) etcdStats() (commits, conflicts uint64) {
	if db.etcd == nil {
		return 0, 0
	}
	return db.etcd.commits.Load(), db.etcd.conflicts.Load()
}

// waitWatched waits until the watch has applied every change committed
// before the call (tests: a cache check must not race the watch's echo of
// this node's own earlier writes).
func (db *DB) waitWatched(ctx context.Context) error {
	s := db.etcd
	if s == nil {
		return nil
	}
	// A write to a key nobody reads makes the watch deliver a revision at
	// least as new as every earlier commit.
	res, err := s.cli.Put(ctx, s.root+"_v/_sync", "")
	if err != nil {
		return err
	}
	for s.watched.Load() <= res.Header.Revision {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}
