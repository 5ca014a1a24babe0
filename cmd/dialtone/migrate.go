package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/dialtone-voip/dialtone/store"
)

// migrateNode is the node name the migration's etcd connection uses (it
// writes no binding of its own; the name only keeps it apart from the
// deployment's nodes).
const migrateNode = "dialtone-migrate"

// runMigrate copies a store between the two backends, key by key
// (store.Migrate):
//
//	dialtone migrate --from-data DIR --to etcd://h1:2379,h2:2379[/prefix] [--prune] [--etcd-cert C --etcd-key K --etcd-ca CA]
//	dialtone migrate --from etcd://h1:2379[/prefix] --to-data DIR --key FILE [--prune] [--etcd-…]
//
// The first moves a single node's bbolt store into etcd (dialtone stopped
// on DIR: a running one is refused); the second writes a bbolt store of a
// deployment into DIR (new or empty; or a previous run's, with the same
// key), which dialtone check, dialtone backup --data and dialtone --data
// take. Both can be run again: keys already equal are skipped, so a second
// run copies nothing and a run after an interruption completes the copy.
func runMigrate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dialtone migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fromData := fs.String("from-data", "", "data directory of a stopped dialtone (bbolt) to copy into etcd")
	to := fs.String("to", "", "etcd://host:port[,host:port…][/prefix] to copy --from-data into")
	from := fs.String("from", "", "etcd://host:port[,host:port…][/prefix] to copy into --to-data")
	toData := fs.String("to-data", "", "data directory to write the bbolt copy of --from into (new, empty, or a previous run's)")
	keyFile := fs.String("key", "", "with --from: the deployment's secret.key (from any node's --data); it is copied into --to-data")
	prune := fs.Bool("prune", false, "also delete keys the destination has and the source has not (default: leave them and count them)")
	var c config
	fs.StringVar(&c.EtcdCert, "etcd-cert", "", "PEM client certificate for etcd (with --etcd-key)")
	fs.StringVar(&c.EtcdKey, "etcd-key", "", "PEM private key for --etcd-cert")
	fs.StringVar(&c.EtcdCA, "etcd-ca", "", "PEM CA bundle that signed the etcd servers' certificates (enables TLS to etcd)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	const usage = "migrate: usage: dialtone migrate --from-data DIR --to etcd://HOST:PORT[,…][/prefix]  |  dialtone migrate --from etcd://HOST:PORT[,…][/prefix] --to-data DIR --key FILE"
	switch {
	case fs.NArg() > 0:
		return errors.New(usage)
	case *fromData != "" && *to != "" && *from == "" && *toData == "" && *keyFile == "":
		c.Store, c.DataDir = *to, *fromData
		return migrateToEtcd(c, *prune, stdout)
	case *from != "" && *toData != "" && *fromData == "" && *to == "":
		if *keyFile == "" {
			return errors.New("migrate: --from etcd://… needs --key FILE: the deployment's secret.key (any node's --data holds it)")
		}
		c.Store, c.DataDir = *from, *toData
		return migrateFromEtcd(c, *keyFile, *prune, stdout)
	}
	return errors.New(usage)
}

// migrateEtcdConfig is the etcd store c.Store names, with the TLS files.
func migrateEtcdConfig(c config, name string) (store.EtcdConfig, error) {
	ec, err := c.etcdConfig()
	if err == nil && ec == nil {
		err = fmt.Errorf("%s %q: want etcd://host:port[,host:port…][/prefix]", name, c.Store)
	}
	if err != nil {
		return store.EtcdConfig{}, fmt.Errorf("migrate: %w", err)
	}
	if ec.TLS, err = c.etcdTLS(); err != nil {
		return store.EtcdConfig{}, fmt.Errorf("migrate: %w", err)
	}
	if ec.Prefix == "" {
		ec.Prefix = "/dialtone" // OpenEtcd's default, named in the messages
	}
	ec.Node = migrateNode
	return *ec, nil
}

func migrateToEtcd(c config, prune bool, stdout io.Writer) error {
	ec, err := migrateEtcdConfig(c, "--to")
	if err != nil {
		return err
	}
	dir := c.DataDir
	src, err := store.OpenReadOnly(dir)
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return fmt.Errorf("migrate: %s is in use by a running dialtone: stop it first (migrate copies a store nobody writes)", dir)
		}
		return fmt.Errorf("migrate: --from-data: %w", err)
	}
	defer src.Close()
	keyPath := filepath.Join(dir, store.KeyFile)
	if src.KeyMissing() {
		return fmt.Errorf("migrate: %s is missing or not a 32-byte key: the SIP passwords in %s cannot be checked or used without it", keyPath, dir)
	}
	where := fmt.Sprintf("etcd prefix %s", ec.Prefix)
	// OpenEtcd reads secret.key from DIR and refuses a prefix whose key
	// check another key wrote.
	dst, err := store.OpenEtcd(ec, store.Options{})
	if err != nil {
		if errors.Is(err, store.ErrWrongKey) {
			return fmt.Errorf("migrate: %s already holds another deployment's data (its meta/key_check does not open with %s): refusing to mix two deployments; choose another prefix (etcd://…/prefix)", where, keyPath)
		}
		return fmt.Errorf("migrate: %w", err)
	}
	defer dst.Close()
	fmt.Fprintf(stdout, "copying %s (bbolt, read-only) into %s, bindings included (live registrations)\n", dir, where)
	st, err := store.Migrate(src, dst, store.MigrateOptions{Prune: prune, Progress: bucketReporter(stdout)})
	if err != nil {
		return migrateFailed(err, st)
	}
	migrateSummary(stdout, st, where, dir, prune)
	fmt.Fprintf(stdout, "secret.key was not copied (it never goes into etcd): every node's --data must hold this same file, %s (mode 0600); a node with another key refuses to start\n", keyPath)
	return nil
}

func migrateFromEtcd(c config, keyFile string, prune bool, stdout io.Writer) (err error) {
	ec, err := migrateEtcdConfig(c, "--from")
	if err != nil {
		return err
	}
	dir := c.DataDir
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return fmt.Errorf("migrate: --key: %w", err)
	}
	if len(key) != 32 {
		return fmt.Errorf("migrate: --key %s: want a 32-byte secret.key, have %d bytes", keyFile, len(key))
	}
	_, statErr := os.Stat(dir)
	wroteKey, err := prepareMigrateDir(dir, key)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && wroteKey { // leave DIR as it was
			os.Remove(filepath.Join(dir, store.FileName))
			os.Remove(filepath.Join(dir, store.KeyFile))
			if errors.Is(statErr, fs.ErrNotExist) {
				os.Remove(dir)
			}
		}
	}()
	where := fmt.Sprintf("etcd prefix %s", ec.Prefix)
	ec.Dir = dir // secret.key, now in DIR
	src, err := store.OpenEtcd(ec, store.Options{})
	if err != nil {
		if errors.Is(err, store.ErrWrongKey) {
			return fmt.Errorf("migrate: --key %s is not the key of the deployment in %s (its meta/key_check does not open with it): take secret.key from one of its nodes' --data", keyFile, where)
		}
		return fmt.Errorf("migrate: %w", err)
	}
	defer src.Close()
	dst, err := store.Open(dir, store.Options{})
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return fmt.Errorf("migrate: %s is in use by a running dialtone: stop it, or choose a new directory", dir)
		}
		return fmt.Errorf("migrate: --to-data: %w", err)
	}
	fmt.Fprintf(stdout, "copying %s into %s (bbolt), bindings included (live registrations)\n", where, dir)
	st, err := store.Migrate(src, dst, store.MigrateOptions{Prune: prune, Progress: bucketReporter(stdout)})
	if cerr := dst.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close %s: %w", dir, cerr)
	}
	if err != nil {
		wroteKey = false // a partial copy is kept: run again to complete it
		return migrateFailed(err, st)
	}
	migrateSummary(stdout, st, dir, where, prune)
	ro, err := store.OpenReadOnly(dir)
	if err != nil {
		return fmt.Errorf("migrate: the copy does not open: %w", err)
	}
	defer ro.Close()
	if err := ro.Check(); err != nil {
		return fmt.Errorf("migrate: the copy in %s fails its check: %w", dir, err)
	}
	fmt.Fprintf(stdout, "%s passes its check (with %s, the deployment's key); dialtone --data %s opens it, dialtone backup --data %s archives it\n", dir, store.KeyFile, dir, dir)
	return nil
}

// prepareMigrateDir accepts a new or empty DIR (and writes the key into it:
// true) or one a previous run wrote (the same secret.key, perhaps with a
// dialtone.db); anything else is refused.
func prepareMigrateDir(dir string, key []byte) (bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("migrate: --to-data: %w", err)
	}
	if len(entries) > 0 {
		have, err := os.ReadFile(filepath.Join(dir, store.KeyFile))
		if err != nil || !bytes.Equal(have, key) {
			return false, fmt.Errorf("migrate: %s is not empty and does not hold this deployment's %s (not a previous migrate's copy): choose a new or empty directory", dir, store.KeyFile)
		}
		for _, e := range entries {
			if n := e.Name(); n != store.KeyFile && n != store.FileName {
				return false, fmt.Errorf("migrate: %s holds %s: choose a new or empty directory", dir, n)
			}
		}
		return false, nil // a previous run's copy: continue it
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("migrate: --to-data: %w", err)
	}
	if err := writeFileSync(filepath.Join(dir, store.KeyFile), key); err != nil {
		return false, fmt.Errorf("migrate: --to-data: %w", err)
	}
	return true, nil
}

// writeFileSync creates path (0600, never over an existing file) with data,
// fsynced with its directory.
func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// bucketReporter prints one line per bucket, when it is done.
func bucketReporter(w io.Writer) func(store.MigrateProgress) {
	var prev store.MigrateStats
	return func(p store.MigrateProgress) {
		if !p.BucketDone {
			return
		}
		t := p.Total
		if t == prev {
			return // an empty bucket
		}
		fmt.Fprintf(w, "  %-18s copied %d, already equal %d, removed %d, left %d\n", p.Bucket,
			t.Copied-prev.Copied, t.Skipped-prev.Skipped, t.Removed-prev.Removed, t.Extra-prev.Extra)
		prev = t
	}
}

func migrateSummary(w io.Writer, st store.MigrateStats, dst, src string, prune bool) {
	fmt.Fprintf(w, "done: copied %d keys, skipped %d already equal, removed %d; %d sequence counters raised; %d transactions\n",
		st.Copied, st.Skipped, st.Removed, st.Sequences, st.Batches)
	if st.Extra > 0 && !prune {
		fmt.Fprintf(w, "left %d keys that %s has and %s has not (run again with --prune to remove them)\n", st.Extra, dst, src)
	}
}

func migrateFailed(err error, st store.MigrateStats) error {
	if errors.Is(err, store.ErrWrongKey) {
		return err // a refusal before anything was written
	}
	return fmt.Errorf("%w (%d keys copied before it stopped; run the same command again to complete the copy: keys already copied are skipped)", err, st.Copied)
}
