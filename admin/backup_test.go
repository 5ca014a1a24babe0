package admin

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/dialtone-voip/dialtone/store"
)

// GET /api/v1/backup is provider-only, audited, and streams a tar of
// secret.key and the database that store.Restore accepts.
func TestBackupRoute(t *testing.T) {
	e := newEnv(t)
	u := e.createUser("1001", "Ada Lovelace")
	e.callErr("GET", "/api/v1/backup", e.token(store.DefaultAccount, store.RoleAdmin), nil, 403, "forbidden")
	e.callErr("GET", "/api/v1/backup", "", nil, 401, "unauthorized")

	status, body := e.do("GET", "/api/v1/backup", providerSecret, nil)
	if status != 200 {
		t.Fatalf("GET /backup = %d %s", status, body)
	}
	names := map[string]int64{}
	tr := tar.NewReader(bytes.NewReader(body))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("archive: %v", err)
		}
		names[h.Name] = h.Size
	}
	if names[store.KeyFile] != 32 || names[store.FileName] == 0 {
		t.Fatalf("archive entries %v, want a 32-byte %s and %s", names, store.KeyFile, store.FileName)
	}
	dir := t.TempDir() + "/restored"
	if err := store.Restore(bytes.NewReader(body), dir); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	db, err := store.OpenReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got, err := db.User(store.DefaultAccount, u.ID); err != nil || got.Extension != "1001" {
		t.Fatalf("restored user: %+v %v", got, err)
	}

	var provider auditList
	e.call("GET", "/api/v1/audit", providerSecret, nil, 200, &provider)
	found := false
	for _, a := range provider.Entries {
		found = found || a.Action == "backup.download" && a.Result == "ok"
	}
	if !found {
		t.Fatalf("the download is not in the provider audit log: %+v", provider.Entries)
	}
}
