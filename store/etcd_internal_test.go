package store

import (
	"errors"
	"testing"
)

// The etcd transaction's conflict detection, one rule at a time: t1 reads,
// t2 commits a change to what t1 read, t1's commit must fail. Each case
// also commits when nothing it read changed.
func TestEtcdTxConflicts(t *testing.T) {
	if etcdForTest == nil {
		t.Skip("etcd only")
	}
	db, err := openTest(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := db.etcd
	b := []byte("users")
	put := func(key, val string) {
		t.Helper()
		if err := s.update(func(tx kvTx) error { return tx.Bucket(b).Put([]byte(key), []byte(val)) }); err != nil {
			t.Fatal(err)
		}
	}
	del := func(key string) {
		t.Helper()
		if err := s.update(func(tx kvTx) error { return tx.Bucket(b).Delete([]byte(key)) }); err != nil {
			t.Fatal(err)
		}
	}
	put("a/u1", "1")
	put("a/u2/x", "2")
	cases := []struct {
		name   string
		read   func(kvBucket)
		change func()
		want   bool // the reader still commits
	}{
		{"point read, key changed", func(b kvBucket) { b.Get([]byte("a/u1")) }, func() { put("a/u1", "1b") }, false},
		{"point read, key deleted", func(b kvBucket) { b.Get([]byte("a/u1")) }, func() { del("a/u1") }, false},
		{"absent key, created", func(b kvBucket) { b.Get([]byte("a/new")) }, func() { put("a/new", "n") }, false},
		{"point read, other key changed", func(b kvBucket) { b.Get([]byte("a/u2/x")) }, func() { put("a/u3", "3") }, true},
		{"prefix read, key inserted", func(b kvBucket) { each(b, "a/u2", func(_, _ []byte) error { return nil }) }, func() { put("a/u2/y", "y") }, false},
		{"prefix read, key deleted", func(b kvBucket) { each(b, "a/u2", func(_, _ []byte) error { return nil }) }, func() { del("a/u2/y") }, false},
		{"prefix read, other prefix changed", func(b kvBucket) { each(b, "a/u2", func(_, _ []byte) error { return nil }) }, func() { put("a/u9/z", "z") }, true},
		{"empty prefix read, key inserted", func(b kvBucket) { each(b, "a/u7", func(_, _ []byte) error { return nil }) }, func() { put("a/u7/c", "c") }, false},
		{"cursor span, key inserted", func(b kvBucket) {
			c := b.Cursor()
			for k, _ := c.Seek([]byte("a/u2/")); k != nil && string(k) < "a/u2/~"; k, _ = c.Next() {
			}
		}, func() { put("a/u2/q", "q") }, false},
		{"whole bucket, any write", func(b kvBucket) { b.ForEach(func(_, _ []byte) error { return nil }) }, func() { put("zz", "z") }, false},
	}
	for _, c := range cases {
		attempts := 0
		err := s.update(func(tx kvTx) error {
			attempts++
			bk := tx.Bucket(b)
			c.read(bk)
			if attempts == 1 {
				c.change() // another node commits between our read and our commit
			}
			return bk.Put([]byte("out/"+c.name), []byte("done"))
		})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := attempts == 1; got != c.want {
			t.Errorf("%s: committed at the first attempt = %v, want %v", c.name, got, c.want)
		}
	}
}

// Reads inside a transaction see its own writes (the rules rely on it), in
// point reads, prefix reads and cursors, and ids from NextSequence grow.
func TestEtcdTxReadsOwnWrites(t *testing.T) {
	if etcdForTest == nil {
		t.Skip("etcd only")
	}
	db, err := openTest(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	bn := []byte("users")
	if err := db.etcd.update(func(tx kvTx) error {
		b := tx.Bucket(bn)
		for _, k := range []string{"a/1", "a/2", "a/3", "b/1"} {
			if err := b.Put([]byte(k), []byte("remote")); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var seq1, seq2 uint64
	err = db.etcd.update(func(tx kvTx) error {
		b := tx.Bucket(bn)
		b.Delete([]byte("a/2"))
		b.Put([]byte("a/25"), []byte("local"))
		b.Put([]byte("a/3"), []byte("local"))
		if v := b.Get([]byte("a/2")); v != nil {
			return errors.New("deleted key still read")
		}
		var got []string
		each(b, "a", func(k, v []byte) error { got = append(got, string(k)+"="+string(v)); return nil })
		if want := "[a/1=remote a/25=local a/3=local]"; fmtList(got) != want {
			t.Errorf("prefix read = %v, want %s", got, want)
		}
		got = nil
		c := b.Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			got = append(got, string(k)+"="+string(v))
		}
		if want := "[b/1=remote a/3=local a/25=local a/1=remote]"; fmtList(got) != want {
			t.Errorf("cursor backwards = %v, want %s", got, want)
		}
		var err error
		if seq1, err = b.NextSequence(); err != nil {
			return err
		}
		seq2, err = b.NextSequence()
		return err
	})
	if err != nil || seq1 == 0 || seq2 <= seq1 { // ids grow (time-ordered on etcd, NextSequence)
		t.Fatalf("update: %v, sequences %d %d", err, seq1, seq2)
	}
}

func fmtList(s []string) string {
	out := "["
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out + "]"
}
