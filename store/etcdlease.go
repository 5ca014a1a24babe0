package store

import (
	"bytes"
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
// the store closes (ctx). A new lease is kept alive from the moment it is
// granted: the re-put of this node's rows onto it (moveRows; thousands of
// rows may take longer than the TTL) runs beside the keep-alive.
func (db *DB) keepLease(ctx context.Context) {
	s := db.etcd
	defer close(s.leaseDone)
	var moving chan struct{} // closed when the re-put onto the lease is done
	for {
		if id := clientv3.LeaseID(s.lease.Load()); id != 0 {
			ch, err := s.cli.KeepAlive(ctx, id)
			if err != nil && moving != nil {
				close(moving) // not moved: the next lease moves them
			}
			if err == nil {
				if moving != nil {
					done := moving
					go func() {
						defer close(done)
						db.moveRows(ctx, id)
					}()
				}
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
			if moving != nil {
				<-moving // its puts fail at once without the lease
				moving = nil
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
		s.useLease(id)
		moving = make(chan struct{})
	}
}

// takeLease makes id this node's lease and puts on it what lived on the
// one it lost (useLease, then moveRows).
func (db *DB) takeLease(ctx context.Context, id clientv3.LeaseID) {
	db.etcd.useLease(id)
	db.moveRows(ctx, id)
}

// useLease makes id this node's lease.
func (s *etcdKV) useLease(id clientv3.LeaseID) {
	select {
	case <-s.leaseLost: // about a lease before this one
	default:
	}
	s.lease.Store(int64(id))
}

// moveRows puts on lease id what lived on the one this node lost, from its
// memory of its rows (refreshOverlay.rows): the rows etcd still has as this
// node put them move onto it; the live ones etcd deleted with the old lease
// are put back (restoreRows); and its nodes key.
func (db *DB) moveRows(ctx context.Context, id clientv3.LeaseID) {
	s := db.etcd
	var rows []etcdRow
	o := &db.refresh
	o.mu.Lock()
	for aor, h := range o.rows {
		for key, r := range h.rows {
			rows = append(rows, etcdRow{key: s.root + string(bBindings) + "/" + k(aor, key), old: r.val, val: r.val})
		}
	}
	o.mu.Unlock()
	moved, missing, err := s.reput(ctx, rows, id)
	if f := s.afterReput.Load(); f != nil {
		(*f)()
	}
	restored := 0
	if err == nil {
		restored, err = db.restoreRows(missing)
	}
	if err == nil {
		err = db.reannounce(ctx, id)
	}
	s.log.Warn("etcd lease granted again: this node's bindings are on it (a phone whose binding is still missing gets it back at its next REGISTER)",
		"node", db.node, "lease", fmt.Sprintf("%x", int64(id)), "moved", moved, "restored", restored, "err", err)
}

// etcdRow is a row to put again: at key, replacing old (compared by value:
// a row another node, or a rule, changed or deleted since is left as it
// is) with val.
type etcdRow struct {
	key      string
	old, val []byte
}

// ownRow reports whether v is a binding row naming node; a cheap test of
// its end (Node is the row's last field) before decoding.
func ownRow(v []byte, node string) bool {
	if !bytes.HasSuffix(v, []byte(node)) {
		return false
	}
	var b Binding
	return decodeBinding(v, &b) == nil && b.Node == node
}

// adoptRows moves the rows of this node's previous run (read at revision
// rev, when the store opened) onto lease id, and remembers them as this
// node's: refresh hints, and the rows to keep on its leases. It returns how
// many it moved.
func (db *DB) adoptRows(ctx context.Context, rows []etcdRow, rev int64, id clientv3.LeaseID) (int, error) {
	n, missing, err := db.etcd.reput(ctx, rows, id)
	gone := make(map[string]bool, len(missing))
	for _, r := range missing {
		gone[r.key] = true
	}
	for _, r := range rows {
		var b Binding
		if !gone[r.key] && decodeBinding(r.val, &b) == nil {
			db.refresh.adopted(b, r.val, rev)
		}
	}
	return n, err
}

// restoreBatch bounds the rows one restoring transaction puts back: with
// its reads (a user, a version key, each row key) and writes (each row, the
// version keys) under etcd's default --max-txn-ops (128).
const restoreBatch = 40

// restoreRows puts back the rows of this node's memory that etcd no longer
// has as this node put them, when they vanished with a lost lease and
// nothing else: only where the AOR is unchanged since this node's last
// write or adoption (its version key has not moved: the expiry of a lease
// moves none, a rule that deleted or replaced a row does), the key is
// free, the row still in this node's memory as it was put (a REGISTER
// that committed during the re-put may have removed or replaced it) and
// live by its true expiry, and its user exists and is enabled. It returns how many it put.
func (db *DB) restoreRows(missing []etcdRow) (int, error) {
	type lost struct {
		aor  string
		rev  int64
		keys []string
		vals [][]byte
	}
	byAOR := map[string]*lost{}
	var todo []*lost
	now := db.now()
	pre := db.etcd.root + string(bBindings) + "/"
	o := &db.refresh
	o.mu.Lock()
	for _, r := range missing {
		var b Binding
		if decodeBinding(r.old, &b) != nil {
			continue
		}
		aor := k(b.AccountID, b.UserID)
		h := o.rows[aor]
		if h == nil || !o.stillHeldLocked(aor, b.key(), r.old, now) {
			continue
		}
		l := byAOR[aor]
		if l == nil {
			l = &lost{aor: aor, rev: h.rev}
			byAOR[aor] = l
			todo = append(todo, l)
		}
		l.keys, l.vals = append(l.keys, strings.TrimPrefix(r.key, pre)), append(l.vals, r.old)
	}
	o.mu.Unlock()
	total := 0
	for len(todo) > 0 {
		var batch []*lost
		for rows := 0; len(todo) > 0 && (len(batch) == 0 || rows+len(todo[0].keys) <= restoreBatch); todo = todo[1:] {
			rows += 1 + len(todo[0].keys)
			batch = append(batch, todo[0])
		}
		n := 0
		var wrote []string // the AORs it put rows in (their version keys move)
		var rev int64      // the revision of its commit
		err := db.update(func(t *tx) error {
			n, wrote = 0, wrote[:0]
			et, _ := t.kvTx.(*etcdTx)
			t.OnCommit(func() { rev = et.committed })
			bk := t.Bucket(bBindings)
			for _, l := range batch {
				put := false
				vk := et.s.root + "_v/" + string(bBindings) + "/" + l.aor + "/"
				if et.get(vk); et.err != nil {
					return et.err
				}
				if et.reads[vk].mod > l.rev {
					continue // a rule changed the AOR since: not only the lease
				}
				acct, user, _ := strings.Cut(l.aor, "/")
				u, err := t.user(acct, user)
				if errors.Is(err, ErrNotFound) || err == nil && u.Status != StatusEnabled {
					continue
				}
				if err != nil {
					return err
				}
				for i, key := range l.keys {
					if bk.Get([]byte(key)) != nil {
						continue
					}
					// A REGISTER of the AOR that committed since the row
					// was found missing (during the re-put) may have
					// removed or replaced it: only a row still in memory
					// as it was, and live, comes back.
					o.mu.Lock()
					held := o.stillHeldLocked(l.aor, strings.TrimPrefix(key, l.aor+"/"), l.vals[i], t.now)
					o.mu.Unlock()
					if !held {
						continue
					}
					if err := bk.Put([]byte(key), l.vals[i]); err != nil {
						return err
					}
					n++
					put = true
				}
				if put {
					wrote = append(wrote, l.aor)
				}
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		// The AORs are as this node knows them at that revision (the
		// transaction checked their version keys): a later loss of the
		// lease restores these rows again.
		o.mu.Lock()
		for _, aor := range wrote {
			if h := o.rows[aor]; h != nil {
				h.rev = max(h.rev, rev)
			}
		}
		o.mu.Unlock()
		total += n
	}
	return total, nil
}

// knownAt reports whether et reads the AOR as this node last knew it (its
// version key has not moved since; see heldAOR.rev): then the AOR is, once
// et commits, as this node knows it plus et's own writes, and knownSince
// records that (the sweep deleting rows of an AOR this node holds), so
// that a later restore is not refused for a change that was this node's.
func (o *refreshOverlay) knownAt(et *etcdTx, aor string) (bool, error) {
	vk := et.s.root + "_v/" + string(bBindings) + "/" + aor + "/"
	if et.get(vk); et.err != nil {
		return false, et.err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	h := o.rows[aor]
	return h != nil && et.reads[vk].mod <= h.rev, nil
}

// knownSince records rev, the commit of a write this node made to aors
// while it knew them (knownAt), as the revision at which it knows them.
func (o *refreshOverlay) knownSince(aors []string, rev int64) {
	if len(aors) == 0 || rev == 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, aor := range aors {
		if h := o.rows[aor]; h != nil {
			h.rev = max(h.rev, rev)
		}
	}
}

// stillHeldLocked reports whether this node's memory still has the row
// bkey (Binding.key) of the AOR stored as val, and live at now by its true
// expiry (its entry; an adopted row without one: its stored expiry). A row
// the phone removed (Expires 0, Contact: *, evicted over maxContacts) or
// replaced, or that expired and was forgotten, is no longer there. o.mu held.
func (o *refreshOverlay) stillHeldLocked(aor, bkey string, val []byte, now time.Time) bool {
	h := o.rows[aor]
	if h == nil {
		return false
	}
	r, ok := h.rows[bkey]
	if !ok || !bytes.Equal(r.val, val) {
		return false
	}
	var b Binding
	if decodeBinding(val, &b) != nil {
		return false
	}
	if st := o.aors[aor]; st != nil {
		if e, ok := st.entries[bkey]; ok && (e.appliesTo(&b) || e.heldAppliesTo(&b, o.node)) {
			e.applyTo(&b)
			return b.Live(now)
		}
	}
	if r.until.Before(b.ExpiresAt) {
		b.ExpiresAt = r.until
	}
	return b.Live(now)
}

// reput writes rows again on lease id, each only if it still holds old, in
// transactions of leaseBatch rows. It bumps no range version key: a row
// moves to another lease or gets an earlier expiry, and no reader of a
// range could have relied on the difference. It returns how many it wrote,
// and the rows it left (changed or gone). A batch one of whose rows changed
// reads them all in the same transaction (its else branch), and the rows
// found unchanged are put again as one batch.
func (s *etcdKV) reput(ctx context.Context, rows []etcdRow, id clientv3.LeaseID) (int, []etcdRow, error) {
	done := 0
	var left []etcdRow
	for len(rows) > 0 {
		batch := rows[:min(leaseBatch, len(rows))]
		rows = rows[len(batch):]
		for len(batch) > 0 {
			ok, same, err := s.reputTxn(ctx, batch, id)
			if err != nil {
				return done, left, err
			}
			if ok {
				done += len(batch)
				break
			}
			var again []etcdRow
			for i, r := range batch {
				if same[i] {
					again = append(again, r)
				} else {
					left = append(left, r)
				}
			}
			batch = again
		}
	}
	return done, left, nil
}

// reputTxn puts rows on lease id if each still holds old; if not, same
// tells which of them did when the transaction ran.
func (s *etcdKV) reputTxn(ctx context.Context, rows []etcdRow, id clientv3.LeaseID) (bool, []bool, error) {
	cmps := make([]clientv3.Cmp, 0, len(rows))
	ops := make([]clientv3.Op, 0, len(rows))
	gets := make([]clientv3.Op, 0, len(rows))
	for _, r := range rows {
		cmps = append(cmps, clientv3.Compare(clientv3.Value(r.key), "=", string(r.old)))
		ops = append(ops, clientv3.OpPut(r.key, string(r.val), clientv3.WithLease(id)))
		gets = append(gets, clientv3.OpGet(r.key))
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Else(gets...).Commit()
	if err != nil {
		return false, nil, s.leaseLostOnPut(err, id)
	}
	if resp.Succeeded {
		return true, nil, nil
	}
	same := make([]bool, len(rows))
	for i, r := range resp.Responses {
		if i >= len(rows) {
			break
		}
		kvs := r.GetResponseRange().GetKvs()
		same[i] = len(kvs) == 1 && bytes.Equal(kvs[0].Value, rows[i].old)
	}
	return false, same, nil
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
	if id == 0 || !db.refresh.held {
		return 0, nil
	}
	var rows []etcdRow
	o := &db.refresh
	o.mu.Lock()
	for aor, h := range o.rows {
		for key, r := range h.rows {
			var b Binding
			if decodeBinding(r.val, &b) != nil {
				continue
			}
			stored := b.ExpiresAt
			o.applyLocked(aor, &b)
			if b.ExpiresAt.Before(stored) {
				rows = append(rows, etcdRow{key: db.etcd.root + string(bBindings) + "/" + k(aor, key), old: r.val, val: encodeBinding(&b)})
			}
		}
	}
	o.mu.Unlock()
	n, _, err := db.etcd.reput(ctx, rows, id)
	return n, err
}

// discardLogger is the logger of a store opened without one.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
