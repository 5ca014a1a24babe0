package admin

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/dialtone-voip/dialtone/store"
)

func TestAccounts(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")

	var a accountJSON
	e.call("POST", "/api/v1/accounts", providerSecret, `{"id": "acme", "sip_domain": "acme.test"}`, 201, &a)
	want := accountJSON{ID: "acme", SIPDomain: "acme.test", CreatedAt: "2026-11-23T09:00:00Z"}
	if diff := cmp.Diff(want, a); diff != "" {
		t.Errorf("created account (-want +got):\n%s", diff)
	}
	e.callErr("POST", "/api/v1/accounts", providerSecret, `{"id": "acme2", "sip_domain": "acme.test"}`, 409, "exists")
	e.callErr("POST", "/api/v1/accounts", admin, `{"id": "x", "sip_domain": "x.test"}`, 403, "forbidden")
	if er := e.callErr("POST", "/api/v1/accounts", providerSecret, `{"id": "_provider", "sip_domain": "p.test"}`, 400, "invalid"); er.Error.Field != "id" {
		t.Errorf("reserved id: field = %q", er.Error.Field)
	}

	var list accountList
	e.call("GET", "/api/v1/accounts", providerSecret, nil, 200, &list)
	if len(list.Accounts) != 2 {
		t.Errorf("provider sees %d accounts, want 2", len(list.Accounts))
	}
	e.call("GET", "/api/v1/accounts", admin, nil, 200, &list)
	if len(list.Accounts) != 1 || list.Accounts[0].ID != "default" {
		t.Errorf("admin sees %+v, want only default", list.Accounts)
	}

	// sip_domain is the provider's; the refusal changes nothing, and is audited.
	er := e.callErr("PATCH", base, admin, `{"sip_domain": "evil.test", "operator_extension": ""}`, 403, "forbidden")
	if er.Error.Field != "sip_domain" {
		t.Errorf("field = %q", er.Error.Field)
	}
	e.call("GET", base, admin, nil, 200, &a)
	if a.SIPDomain != "example.test" {
		t.Errorf("sip_domain changed to %q by a refused PATCH", a.SIPDomain)
	}
	if en := e.auditEntries()[0]; en.Action != "account.update" || en.Result != "forbidden" || en.Detail["field"] != "sip_domain" {
		t.Errorf("refusal not audited: %+v", en)
	}
	e.call("PATCH", base, providerSecret, `{"sip_domain": "Voice.Example.test"}`, 200, &a)
	if a.SIPDomain != "voice.example.test" {
		t.Errorf("sip_domain = %q", a.SIPDomain)
	}
	er = e.callErr("PATCH", base, admin, `{"operator_extension": "4711"}`, 400, "invalid")
	if er.Error.Field != "operator_extension" {
		t.Errorf("field = %q", er.Error.Field)
	}
	// Another account's admin learns nothing, not even that it exists.
	other := e.token("acme", "admin")
	e.callErr("GET", base, other, nil, 404, "not_found")
	e.callErr("GET", "/api/v1/accounts/nonexistent", other, nil, 404, "not_found")
	e.callErr("GET", "/api/v1/accounts/nonexistent", providerSecret, nil, 404, "not_found")
}

func TestLicencesAndSeats(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	ada := e.createUser("1002", "Ada Lovelace")
	bob := e.createUser("1003", "Bob Soft")

	var l1, l2 licenceJSON
	body := e.call("POST", base+"/licences", providerSecret, nil, 201, &l1) // type defaults
	if l1.Type != "cloud-phone" || l1.UserID != nil || !strings.Contains(string(body), `"user_id":null`) {
		t.Errorf("new licence = %s", body)
	}
	e.call("POST", base+"/licences", providerSecret, `{"type": "cloud-phone"}`, 201, &l2)
	e.callErr("POST", base+"/licences", admin, `{}`, 403, "forbidden")

	e.call("POST", base+"/licences/"+l1.ID+"/assign", admin, map[string]string{"user_id": ada.ID}, 200, &l1)
	if l1.UserID == nil || *l1.UserID != ada.ID || l1.AssignedAt == nil {
		t.Errorf("assigned = %+v", l1)
	}
	e.callErr("POST", base+"/licences/"+l2.ID+"/assign", admin, map[string]string{"user_id": ada.ID}, 409, "user_has_licence")
	er := e.callErr("POST", base+"/licences/"+l2.ID+"/assign", admin, map[string]string{"user_id": "u-nobody"}, 400, "invalid")
	if er.Error.Field != "user_id" {
		t.Errorf("field = %q", er.Error.Field)
	}
	var a accountJSON
	e.call("GET", base, admin, nil, 200, &a)
	if a.Seats != (seatsJSON{Total: 2, Assigned: 1, Free: 1}) {
		t.Errorf("seats = %+v", a.Seats)
	}
	e.callErr("DELETE", base+"/licences/"+l1.ID, providerSecret, nil, 409, "licence_assigned")
	e.callErr("POST", base+"/licences/"+l1.ID+"/release", admin, nil, 403, "forbidden")
	e.call("POST", base+"/licences/"+l1.ID+"/release", providerSecret, nil, 200, &l1)
	if l1.UserID != nil || l1.AssignedAt != nil {
		t.Errorf("released = %+v", l1)
	}
	e.call("POST", base+"/licences/"+l2.ID+"/assign", admin, map[string]string{"user_id": bob.ID}, 200, nil)
	e.call("DELETE", base+"/licences/"+l1.ID, providerSecret, nil, 204, nil)
	e.callErr("GET", base+"/licences/"+l1.ID, admin, nil, 404, "not_found")
	var ll licenceList
	e.call("GET", base+"/licences", admin, nil, 200, &ll)
	if len(ll.Licences) != 1 || ll.Licences[0].ID != l2.ID {
		t.Errorf("licences = %+v", ll)
	}
}

func TestTokens(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	viewer := e.token("default", "viewer")

	var created struct {
		ID        string  `json:"id"`
		Token     string  `json:"token"`
		Role      string  `json:"role"`
		Name      string  `json:"name"`
		AccountID *string `json:"account_id"`
	}
	e.call("POST", base+"/tokens", admin, `{"role": "viewer", "name": "wallboard"}`, 201, &created)
	if created.ID == "" || len(created.Token) < 16 || created.Role != "viewer" || created.AccountID == nil || *created.AccountID != "default" {
		t.Fatalf("created = %+v", created)
	}
	e.call("GET", base+"/users", created.Token, nil, 200, nil)
	e.call("POST", base+"/tokens", admin, `{"role": "admin", "name": "second admin"}`, 201, nil)
	er := e.callErr("POST", base+"/tokens", admin, `{"role": "provider"}`, 400, "invalid")
	if er.Error.Field != "role" {
		t.Errorf("field = %q", er.Error.Field)
	}
	e.callErr("POST", base+"/tokens", viewer, `{"role": "viewer"}`, 403, "forbidden")
	e.callErr("POST", "/api/v1/tokens", admin, `{"role": "provider"}`, 403, "forbidden")

	// Shown once: lists carry ids, names and roles, never secrets or hashes.
	list := e.call("GET", base+"/tokens", admin, nil, 200, nil)
	sum := sha256.Sum256([]byte(created.Token))
	hash := hex.EncodeToString(sum[:])
	for _, secret := range []string{created.Token, admin, viewer, hash, `"hash"`, `"token"`} {
		if strings.Contains(string(list), secret) {
			t.Errorf("token list shows %q", secret)
		}
	}
	if !strings.Contains(string(list), `"wallboard"`) {
		t.Errorf("token list lacks the new token: %s", list)
	}
	// Hashed at rest: the secret is nowhere in the data file, its hash is.
	data, err := os.ReadFile(filepath.Join(e.dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(created.Token)) {
		t.Error("the token's secret is in the bbolt file")
	}
	if !bytes.Contains(data, []byte(hash)) {
		t.Error("the token's hash is not in the bbolt file (wrong file?)")
	}

	// Provider tokens live outside accounts.
	var prov tokenCreated
	e.call("POST", "/api/v1/tokens", providerSecret, `{"name": "automation"}`, 201, &prov)
	if prov.Role != "provider" || prov.AccountID != nil {
		t.Errorf("provider token = %+v", prov)
	}
	var tl tokenList
	e.call("GET", "/api/v1/tokens", prov.Token, nil, 200, &tl)
	if len(tl.Tokens) != 2 {
		t.Errorf("provider tokens = %+v", tl)
	}
	// An account admin cannot revoke a provider's token through its account.
	e.callErr("DELETE", base+"/tokens/"+prov.ID, admin, nil, 404, "not_found")

	// Revoked: 401 at once.
	e.call("DELETE", base+"/tokens/"+created.ID, admin, nil, 204, nil)
	e.callErr("GET", base+"/users", created.Token, nil, 401, "unauthorized")
	e.call("DELETE", "/api/v1/tokens/"+prov.ID, providerSecret, nil, 204, nil)
	e.callErr("GET", "/api/v1/tokens", prov.Token, nil, 401, "unauthorized")
}

func TestAuditPaging(t *testing.T) {
	e := newEnv(t)
	for _, ext := range []string{"1001", "1002", "1003"} {
		e.createUser(ext, "User "+ext)
	}
	var page auditList
	e.call("GET", base+"/audit?limit=2", providerSecret, nil, 200, &page)
	if len(page.Entries) != 2 || page.NextBefore == nil || page.Entries[0].TargetLabel != "1003 User 1003" {
		t.Fatalf("page 1 = %+v", page)
	}
	if page.Entries[0].Actor.Role != "provider" || page.Entries[0].Actor.Source == "" {
		t.Errorf("actor = %+v", page.Entries[0].Actor)
	}
	var next auditList
	e.call("GET", base+"/audit?limit=2&before="+strconv.FormatUint(*page.NextBefore, 10), providerSecret, nil, 200, &next)
	if len(next.Entries) == 0 || next.Entries[0].Seq >= page.Entries[1].Seq {
		t.Errorf("page 2 = %+v", next)
	}
	er := e.callErr("GET", base+"/audit?limit=0", providerSecret, nil, 400, "invalid")
	if er.Error.Field != "limit" {
		t.Errorf("field = %q", er.Error.Field)
	}
	e.callErr("GET", base+"/audit?before=x", providerSecret, nil, 400, "invalid")

	// Provider-level changes have their own log.
	e.call("POST", "/api/v1/tokens", providerSecret, `{"name": "ci"}`, 201, nil)
	e.call("GET", "/api/v1/audit", providerSecret, nil, 200, &page)
	if len(page.Entries) == 0 || page.Entries[0].Action != "token.create" {
		t.Errorf("provider audit = %+v", page)
	}
}
