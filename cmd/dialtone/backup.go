package main

import (
	"archive/tar"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dialtone-voip/dialtone/store"
)

// runBackup writes a backup archive (tar of secret.key and a consistent
// snapshot of dialtone.db):
//
//	dialtone backup --out FILE --admin-url http://127.0.0.1:8081 [--token-file F] [--ca-cert PEM]   (running server)
//	dialtone backup --out FILE --data DIR                                          (stopped server)
//
// The token comes from --token-file or $DIALTONE_TOKEN (never a flag value,
// which other users could read in the process list). The archive is written
// to FILE.partial, read back completely, fsynced and only then renamed to
// FILE, so FILE is never a truncated archive; an existing FILE is refused.
func runBackup(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dialtone backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "the archive to write (must not exist)")
	adminURL := fs.String("admin-url", "", "admin API of a running dialtone, e.g. http://127.0.0.1:8081 (uses GET /api/v1/backup; needs a provider token)")
	tokenFile := fs.String("token-file", "", "file holding a provider token (default: $DIALTONE_TOKEN)")
	caFile := fs.String("ca-cert", "", "PEM certificate(s) to trust for an https --admin-url (e.g. the one from dialtone cert)")
	dataDir := fs.String("data", "./data", "data directory of a stopped dialtone (without --admin-url)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		return errors.New("backup: usage: dialtone backup --out FILE [--admin-url URL [--token-file F] | --data DIR]")
	}
	if _, err := os.Lstat(*out); err == nil {
		return fmt.Errorf("backup: %s exists; choose a new file name", *out)
	}
	partial := *out + ".partial"
	f, err := os.OpenFile(partial, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	keep := false
	defer func() {
		f.Close()
		if !keep {
			os.Remove(partial)
		}
	}()
	if *adminURL != "" {
		token, err := readToken(*tokenFile, getenv)
		if err != nil {
			return err
		}
		cli, err := backupClient(*caFile)
		if err != nil {
			return err
		}
		if err := fetchBackup(ctx, cli, *adminURL, token, f); err != nil {
			return err
		}
	} else if _, err := store.BackupDir(*dataDir, f); err != nil {
		if errors.Is(err, store.ErrLocked) {
			return fmt.Errorf("backup: %s is in use by a running dialtone: back it up through it with --admin-url", *dataDir)
		}
		return fmt.Errorf("backup: %w", err)
	}
	dbBytes, err := verifyArchive(f)
	if err != nil {
		return fmt.Errorf("backup: the archive is incomplete: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := os.Rename(partial, *out); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	keep = true
	if d, err := os.Open(filepath.Dir(*out)); err == nil {
		d.Sync()
		d.Close()
	}
	fmt.Fprintf(stdout, "wrote %s (dialtone.db %d bytes and secret.key; keep it as secret as the data directory)\n", *out, dbBytes)
	return nil
}

func readToken(file string, getenv func(string) string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("backup: --token-file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if t := getenv("DIALTONE_TOKEN"); t != "" {
		return t, nil
	}
	return "", errors.New("backup: --admin-url needs a provider token: --token-file F or $DIALTONE_TOKEN")
}

// backupClient trusts the system roots, or only caFile's certificates.
func backupClient(caFile string) (*http.Client, error) {
	cli := &http.Client{Timeout: time.Hour}
	if caFile == "" {
		return cli, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("backup: --ca-cert: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("backup: --ca-cert %s: no PEM certificate in it", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	cli.Transport = tr
	return cli, nil
}

func fetchBackup(ctx context.Context, cli *http.Client, base, token string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/api/v1/backup", nil)
	if err != nil {
		return fmt.Errorf("backup: --admin-url: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := cli.Do(req)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		return fmt.Errorf("backup: GET /api/v1/backup answered %s: %s", res.Status, strings.TrimSpace(string(msg)))
	}
	if _, err := io.Copy(w, res.Body); err != nil {
		return fmt.Errorf("backup: download cut short: %w", err)
	}
	return nil
}

// verifyArchive reads f from the start as a backup archive: both entries,
// complete, the database starting with a bbolt page header. It returns the
// database's size.
func verifyArchive(f *os.File) (int64, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	tr := tar.NewReader(f)
	var dbBytes int64
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		n, err := io.Copy(io.Discard, tr)
		if err != nil {
			return 0, err
		}
		seen[h.Name] = true
		if h.Name == store.FileName {
			dbBytes = n
		}
	}
	if !seen[store.FileName] || !seen[store.KeyFile] {
		return 0, fmt.Errorf("want %s and %s, have %v", store.FileName, store.KeyFile, seen)
	}
	return dbBytes, nil
}

// runRestore unpacks a backup archive into a new data directory:
//
//	dialtone restore --in FILE --data DIR
//
// DIR must be empty or absent; the result is checked (store.Check) before
// the command reports success. Start dialtone on DIR afterwards.
func runRestore(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dialtone restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "", "the backup archive (from dialtone backup)")
	dataDir := fs.String("data", "", "the data directory to create (must be empty or absent)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *in == "" || *dataDir == "" || fs.NArg() > 0 {
		return errors.New("restore: usage: dialtone restore --in FILE --data DIR")
	}
	f, err := os.Open(*in)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	if err := store.Restore(f, *dataDir); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored %s into %s (consistency check passed); start dialtone with --data %s\n", *in, *dataDir, *dataDir)
	return nil
}
