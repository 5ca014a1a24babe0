package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The node lease (etcd). OpenEtcd grants this node one lease of
// EtcdConfig.LeaseTTL and keeps it alive; every binding row it writes, and
// its nodes/<id> key, is put with it. When the node dies its keep-alives
// stop and etcd deletes those keys once the TTL has passed: a dead node's
// bindings never block a deletion for longer than that.
//
// When the lease is lost while the node runs (etcd unreachable for longer
// than the TTL, or the lease revoked), the node grants itself a new one and
// re-puts on it the rows naming it that are still there, the live ones of
// its memory that etcd deleted (restoreRows: through the rules, so never
// for a user deleted meanwhile nor over another node's row), and its nodes
// key; until then every write of a binding row fails with ErrNoLease
// (nothing written).
//
// A restart with the same node id within the TTL adopts the rows naming it
// (re-puts them on its new lease), so a quick restart drops no phone. Close
// revokes nothing (revoking would drop every UDP phone of a quick restart
// until its next refresh): a graceful stop writes each of its rows' true
// expiry (see refreshOverlay, "held") and deletes its nodes/<id> key; rows
// the node does not come back for vanish at the latest a TTL after the
// stop, and a phone that re-registers through another node meanwhile
// replaces its row there (same key) or lets the old one vanish.

// ErrNoLease means this node holds no etcd lease at the moment (etcd was
// unreachable for longer than the lease TTL, or the lease was revoked), so
// it writes no binding: a binding it wrote would not vanish with the node.
// It grants itself a new lease as soon as etcd answers; try again then.
var ErrNoLease = errors.New("store: this node holds no etcd lease (etcd unreachable for longer than the lease TTL?); registrations are refused until it has a new one, try again shortly")

// leaseBatch is how many rows one re-put transaction carries: under etcd's
// default --max-txn-ops (128), for its compares and for its puts.
const leaseBatch = 100

// grantLease asks etcd for a lease of the configured TTL.
func (s *etcdKV) grantLease(ctx context.Context) (clientv3.LeaseID, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Grant(ctx, int64((s.leaseTTL+time.Second-1)/time.Second))
	if err != nil {
		return 0, err
	}
	return resp.ID, nil
}

// leaseLostOnPut reports a put refused for its lease (etcd expired or
// revoked it before the keep-alive noticed): the keeper grants a new one.
func (s *etcdKV) leaseLostOnPut(err error, id clientv3.LeaseID) error {
	if !errors.Is(err, rpctypes.ErrLeaseNotFound) && !strings.Contains(err.Error(), rpctypes.ErrLeaseNotFound.Error()) {
		return err
	}
	if s.lease.CompareAndSwap(int64(id), 0) {
		select {
		case s.leaseLost <- struct{}{}:
		default:
		}
	}
	return fmt.Errorf("%w (%v)", ErrNoLease, err)
}

// keepLease keeps the lease alive, and replaces it when it is lost, until
// the store closes (ctx).
func (db *DB) keepLease(ctx context.Context) {
	s := db.etcd
	defer close(s.leaseDone)
	for {
		if id := clientv3.LeaseID(s.lease.Load()); id != 0 {
			ch, err := s.cli.KeepAlive(ctx, id)
			if err == nil {
			alive:
				for {
					select {
					case _, ok := <-ch:
						if !ok {
							break alive
						}
					case <-s.leaseLost:
						break alive
					}
				}
			}
			if ctx.Err() != nil {
				return
			}
			s.lease.CompareAndSwap(int64(id), 0)
			s.log.Warn("etcd lease lost: registrations are refused until a new lease is granted", "node", db.node, "lease", fmt.Sprintf("%x", int64(id)))
		}
		var id clientv3.LeaseID
		for wait := 100 * time.Millisecond; ; wait = min(2*wait, max(s.leaseTTL/3, time.Second)) {
			var err error
			if id, err = s.grantLease(ctx); err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("etcd lease: cannot grant a new one", "node", db.node, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(rand.N(wait) + wait/2):
			}
		}
		db.takeLease(ctx, id)
	}
}

// takeLease makes id this node's lease, then puts on it what lived on the
// one it lost: the rows naming this node that etcd still has, the ones of
// its memory etcd deleted (through the rules: never for a user deleted
// meanwhile, never over another node's row), and its nodes key.
func (db *DB) takeLease(ctx context.Context, id clientv3.LeaseID) {
	s := db.etcd
	select {
	case <-s.leaseLost: // about a lease before this one
	default:
	}
	s.lease.Store(int64(id))
	moved, present, err := db.adoptRows(ctx, id)
	restored := 0
	if err == nil {
		restored, err = db.restoreRows(present)
	}
	if err == nil {
		err = db.reannounce(ctx, id)
	}
	s.log.Warn("etcd lease granted again: this node's bindings are on it (a phone whose binding is still missing gets it back at its next REGISTER)",
		"node", db.node, "lease", fmt.Sprintf("%x", int64(id)), "moved", moved, "restored", restored, "err", err)
}

// etcdRow is one key as read, with the revision a re-put compares.
type etcdRow struct {
	key string
	mod int64
	val []byte
}

// ownRows reads every binding row naming this node (one paged read of the
// bindings).
func (db *DB) ownRows(ctx context.Context) ([]etcdRow, error) {
	s := db.etcd
	from := s.root + string(bBindings) + "/"
	to := clientv3.GetPrefixRangeEnd(from)
	var out []etcdRow
	var rev int64
	for start := from; ; {
		opts := []clientv3.OpOption{clientv3.WithRange(to), clientv3.WithLimit(etcdPage), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		rctx, cancel := context.WithTimeout(ctx, s.timeout)
		resp, err := s.cli.Get(rctx, start, opts...)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("read this node's bindings: %w", err)
		}
		rev = resp.Header.Revision
		for _, kv := range resp.Kvs {
			var b Binding
			if decodeBinding(kv.Value, &b) == nil && b.Node == db.node {
				out = append(out, etcdRow{key: string(kv.Key), mod: kv.ModRevision, val: kv.Value})
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// adoptRows puts every row naming this node on lease id (at Open: the rows
// of this node's previous run; after a lost lease: the rows etcd has not
// deleted yet), and remembers them as this node's (refresh hints, and the
// rows to restore if a lease is lost later). It returns how many it moved,
// and the keys it found.
func (db *DB) adoptRows(ctx context.Context, id clientv3.LeaseID) (int, map[string]bool, error) {
	rows, err := db.ownRows(ctx)
	if err != nil {
		return 0, nil, err
	}
	n, err := db.etcd.reput(ctx, rows, id)
	present := make(map[string]bool, len(rows))
	for _, r := range rows {
		present[r.key] = true
		var b Binding
		if decodeBinding(r.val, &b) == nil {
			db.refresh.adopted(b, r.val)
		}
	}
	return n, present, err
}

// restoreBatch is how many AORs one restoring transaction covers: each
// adds a user read, a range read, its rows and three version keys, under
// etcd's default --max-txn-ops (128).
const restoreBatch = 20

// restoreRows puts back the rows of this node's memory that are live but
// not among present (etcd deleted them with a lost lease), each through
// the rules: only while its user exists and is enabled, only where the key
// is still free (a phone that moved to another node keeps its row there).
// It returns how many it put.
func (db *DB) restoreRows(present map[string]bool) (int, error) {
	type lost struct {
		aor  string
		keys []string
		vals [][]byte
	}
	var todo []lost
	now := db.now()
	o := &db.refresh
	o.mu.Lock()
	for aor, rows := range o.rows {
		l := lost{aor: aor}
		for key, r := range rows {
			if present[db.etcd.root+string(bBindings)+"/"+k(aor, key)] {
				continue
			}
			var b Binding
			if decodeBinding(r.val, &b) != nil || b.Node != db.node {
				continue
			}
			o.applyLocked(aor, &b)
			if b.Live(now) {
				l.keys, l.vals = append(l.keys, key), append(l.vals, r.val)
			}
		}
		if len(l.keys) > 0 {
			todo = append(todo, l)
		}
	}
	o.mu.Unlock()
	total := 0
	for len(todo) > 0 {
		batch := todo[:min(restoreBatch, len(todo))]
		todo = todo[len(batch):]
		n := 0
		err := db.update(func(t *tx) error {
			n = 0
			bk := t.Bucket(bBindings)
			for _, l := range batch {
				acct, user, _ := strings.Cut(l.aor, "/")
				u, err := t.user(acct, user)
				if errors.Is(err, ErrNotFound) || err == nil && u.Status != StatusEnabled {
					continue
				}
				if err != nil {
					return err
				}
				for i, key := range l.keys {
					rk := []byte(k(l.aor, key))
					if bk.Get(rk) != nil {
						continue
					}
					if err := bk.Put(rk, l.vals[i]); err != nil {
						return err
					}
					n++
				}
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// reput writes rows again, each only if unchanged since read (a row another
// node replaced or deleted meanwhile is left as it is), on lease id, in
// transactions of leaseBatch rows. It bumps no range version key: the rows'
// contents are the ones read (or, from settle, an earlier expiry), so no
// reader of a range could have concluded otherwise about what is live.
func (s *etcdKV) reput(ctx context.Context, rows []etcdRow, id clientv3.LeaseID) (int, error) {
	done := 0
	for len(rows) > 0 {
		batch := rows[:min(leaseBatch, len(rows))]
		rows = rows[len(batch):]
		ok, err := s.reputTxn(ctx, batch, id)
		if err != nil {
			return done, err
		}
		if ok {
			done += len(batch)
			continue
		}
		// One of them changed: each on its own.
		for _, r := range batch {
			ok, err := s.reputTxn(ctx, []etcdRow{r}, id)
			if err != nil {
				return done, err
			}
			if ok {
				done++
			}
		}
	}
	return done, nil
}

func (s *etcdKV) reputTxn(ctx context.Context, rows []etcdRow, id clientv3.LeaseID) (bool, error) {
	cmps := make([]clientv3.Cmp, 0, len(rows))
	ops := make([]clientv3.Op, 0, len(rows))
	for _, r := range rows {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(r.key), "=", r.mod))
		ops = append(ops, clientv3.OpPut(r.key, string(r.val), clientv3.WithLease(id)))
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, s.leaseLostOnPut(err, id)
	}
	return resp.Succeeded, nil
}

// reannounce puts this node's nodes/<id> key again, on lease id, if
// AnnounceNode put it before.
func (db *DB) reannounce(ctx context.Context, id clientv3.LeaseID) error {
	v := db.etcd.announced.Load()
	if v == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, db.etcd.timeout)
	defer cancel()
	_, err := db.etcd.cli.Put(ctx, db.etcd.root+"nodes/"+db.node, *v, clientv3.WithLease(id))
	return err
}

// settleRows runs as the store closes gracefully: every row of this node
// whose true expiry (held in memory, see refreshOverlay) is earlier than the
// horizon it has in etcd gets the true expiry written, so the other nodes,
// and this node's next run, see exactly when it ends.
func (db *DB) settleRows(ctx context.Context) (int, error) {
	id := clientv3.LeaseID(db.etcd.lease.Load())
	if id == 0 || !db.refresh.held || db.refresh.n.Load() == 0 {
		return 0, nil
	}
	rows, err := db.ownRows(ctx)
	if err != nil {
		return 0, err
	}
	settled := rows[:0]
	for _, r := range rows {
		var b Binding
		if decodeBinding(r.val, &b) != nil {
			continue
		}
		stored := b.ExpiresAt
		db.refresh.applyOne(&b)
		if !b.ExpiresAt.Before(stored) {
			continue
		}
		r.val = encodeBinding(&b)
		settled = append(settled, r)
	}
	return db.etcd.reput(ctx, settled, id)
}

// discardLogger is the logger of a store opened without one.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
