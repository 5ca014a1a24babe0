package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/dialtone-voip/dialtone/store"
)

// runCheck inspects a data directory without changing it:
//
//	dialtone check [--data DIR]
//
// It prints the versions, the record counts and the consistency check
// (store.Check), and fails (exit status 1) on any problem. It opens the
// directory read-only, so it refuses one a running dialtone holds: check a
// backup restored into a scratch directory instead.
func runCheck(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dialtone check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data", "./data", "the data directory to check")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errors.New("check: usage: dialtone check [--data DIR]")
	}
	// A damaged file can make bbolt panic (or fault on its mapping): that is
	// a finding, reported like any other, not a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	var db *store.DB
	err := damaged(func() (err error) { db, err = store.OpenReadOnly(*dataDir); return err })
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return fmt.Errorf("check: %s is in use by a running dialtone; stop it, or check a backup restored into a scratch directory", *dataDir)
		}
		return fmt.Errorf("check: %w", err)
	}
	defer db.Close()
	var st store.Stats
	if err := damaged(func() (err error) { st, err = db.Stats(); return err }); err != nil {
		fmt.Fprintf(stdout, "data directory: %s\nconsistency: 1 problem\n  - %v\n", *dataDir, err)
		return fmt.Errorf("check: %s: %w", *dataDir, err)
	}
	var problems []string
	fmt.Fprintf(stdout, "data directory: %s\n", *dataDir)
	fmt.Fprintf(stdout, "dialtone %s; data schema %s (this build reads %d)\n", version, st.Schema, st.BuildSchema)
	if st.Schema != fmt.Sprint(st.BuildSchema) {
		problems = append(problems, fmt.Sprintf("data schema %q is not the one this build reads (%d)", st.Schema, st.BuildSchema))
	}
	fmt.Fprintf(stdout, "%s: %d bytes, last transaction %d\n", store.FileName, st.FileBytes, st.TxID)
	if st.KeyPresent {
		fmt.Fprintf(stdout, "%s: present\n", store.KeyFile)
	} else {
		fmt.Fprintf(stdout, "%s: MISSING or not a 32-byte key\n", store.KeyFile)
		if st.Records["secrets"] > 0 || st.Records["provisioning"] > 0 {
			problems = append(problems, fmt.Sprintf("%d sealed SIP passwords but no usable %s: they cannot be decrypted (restore the key from the backup it came with)", st.Records["secrets"], store.KeyFile))
		}
	}
	var counts []string
	for _, b := range st.Buckets {
		counts = append(counts, fmt.Sprintf("%s %d", b, st.Records[b]))
	}
	fmt.Fprintf(stdout, "records: %s\n", strings.Join(counts, ", "))
	fmt.Fprintf(stdout, "live registrations: %d\n", st.LiveBindings)
	if err := damaged(db.Check); err != nil {
		problems = append(problems, strings.Split(err.Error(), "\n")...)
	}
	if len(problems) == 0 {
		fmt.Fprintln(stdout, "consistency: ok")
		return nil
	}
	fmt.Fprintf(stdout, "consistency: %d problems\n", len(problems))
	for _, p := range problems {
		fmt.Fprintf(stdout, "  - %s\n", p)
	}
	return fmt.Errorf("check: %d problems in %s", len(problems), *dataDir)
}

// damaged runs fn and turns a panic into an error naming the damage.
func damaged(fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("the data file is damaged (reading it failed: %v)", v)
		}
	}()
	return fn()
}
