package admin

import (
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestUserCRUD(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	viewer := e.token("default", "viewer")

	var u userJSON
	e.call("POST", base+"/users", admin, `{"extension": "1002", "name": "Ada Lovelace", "email": "ada@example.test"}`, 201, &u)
	want := userJSON{ID: u.ID, Extension: "1002", Name: "Ada Lovelace", Email: "ada@example.test", Status: "enabled",
		CreatedAt: "2026-11-23T09:00:00Z", UpdatedAt: "2026-11-23T09:00:00Z"}
	if diff := cmp.Diff(want, u); diff != "" || u.ID == "" {
		t.Fatalf("created user (-want +got):\n%s", diff)
	}

	var got userJSON
	e.call("GET", base+"/users/"+u.ID, viewer, nil, 200, &got)
	if diff := cmp.Diff(u, got); diff != "" {
		t.Errorf("GET user (-want +got):\n%s", diff)
	}

	e.createUser("1001", "Grace Hopper")
	var list userList
	e.call("GET", base+"/users", viewer, nil, 200, &list)
	var exts []string
	for _, x := range list.Users {
		exts = append(exts, x.Extension)
	}
	if diff := cmp.Diff([]string{"1001", "1002"}, exts); diff != "" {
		t.Errorf("list by extension (-want +got):\n%s", diff)
	}

	e.clock.Advance(time.Minute)
	e.call("PATCH", base+"/users/"+u.ID, admin, `{"name": "Ada King"}`, 200, &got)
	if got.Name != "Ada King" || got.Extension != "1002" || got.Email != "ada@example.test" || got.UpdatedAt != "2026-11-23T09:01:00Z" {
		t.Errorf("PATCH name = %+v", got)
	}
	e.call("PATCH", base+"/users/"+u.ID, admin, `{"extension": "1003"}`, 200, &got)
	if got.Extension != "1003" {
		t.Errorf("PATCH extension = %+v", got)
	}

	// Refusals name their fields and change nothing.
	er := e.callErr("PATCH", base+"/users/"+u.ID, admin, `{"extension": "1001"}`, 400, "invalid")
	if er.Error.Field != "extension" {
		t.Errorf("duplicate extension field = %q", er.Error.Field)
	}
	er = e.callErr("POST", base+"/users", admin, `{"extension": "x", "name": "", "email": "nope"}`, 400, "invalid")
	if diff := cmp.Diff([]string{"email", "extension", "name"}, keys(er.Error.Fields)); diff != "" {
		t.Errorf("fields (-want +got):\n%s", diff)
	}
	if er.Error.Field != "email" {
		t.Errorf("field = %q, want the first bad field", er.Error.Field)
	}
	e.call("GET", base+"/users/"+u.ID, viewer, nil, 200, &got)
	if got.Extension != "1003" || got.Name != "Ada King" {
		t.Errorf("after refusals = %+v", got)
	}
	e.callErr("GET", base+"/users/u-missing", viewer, nil, 404, "not_found")
	e.callErr("POST", base+"/users", viewer, `{"extension": "1010", "name": "V"}`, 403, "forbidden")

	// disable / enable answer with the user.
	e.call("POST", base+"/users/"+u.ID+"/disable", admin, nil, 200, &got)
	if got.Status != "disabled" {
		t.Errorf("disable = %+v", got)
	}
	e.call("POST", base+"/users/"+u.ID+"/enable", admin, nil, 200, &got)
	if got.Status != "enabled" {
		t.Errorf("enable = %+v", got)
	}
	e.call("POST", base+"/users/"+u.ID+"/disable", admin, nil, 200, &got)
	if status, body := e.do("DELETE", base+"/users/"+u.ID, admin, nil); status != 204 || len(body) != 0 {
		t.Fatalf("DELETE = %d %q, want 204 with no body", status, body)
	}
	e.callErr("GET", base+"/users/"+u.ID, viewer, nil, 404, "not_found")
	e.callErr("DELETE", base+"/users/"+u.ID, admin, nil, 404, "not_found")
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestDeleteBlockedThenCleared walks a user's deletion: every blocker at
// once, then each cleared in turn, then the delete, with history kept.
func TestDeleteBlockedThenCleared(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	ada := e.createUser("1002", "Ada Lovelace")
	userPath := base + "/users/" + ada.ID

	var lic licenceJSON
	e.call("POST", base+"/licences", providerSecret, `{"type": "cloud-phone"}`, 201, &lic)
	e.call("POST", base+"/licences/"+lic.ID+"/assign", admin, map[string]string{"user_id": ada.ID}, 200, &lic)
	e.call("PATCH", base, admin, `{"operator_extension": "1002"}`, 200, nil)
	const ua = "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc"
	e.register(ada.ID, "sip:1002@192.0.2.7:5062", ua)

	wantBlockers := []map[string]any{
		{"kind": "enabled", "detail": "disable the user first"},
		{"kind": "registration", "contact": "sip:1002@192.0.2.7:5062", "source": "192.0.2.7:5062", "transport": "udp",
			"user_agent": ua, "expires_at": "2026-11-23T10:00:00Z", "mac": "001565aabbcc"},
		{"kind": "licence", "id": lic.ID},
		{"kind": "operator", "detail": "set another operator extension first"},
	}
	er := e.callErr("DELETE", userPath, admin, nil, 409, "delete_blocked")
	if diff := cmp.Diff(wantBlockers, er.Error.Blockers); diff != "" {
		t.Fatalf("blockers (-want +got):\n%s", diff)
	}
	if want := "user 1002 cannot be deleted: 4 blockers"; er.Error.Message != want {
		t.Errorf("message = %q, want %q", er.Error.Message, want)
	}
	check := func(kinds ...string) {
		t.Helper()
		var dc struct {
			Deletable bool             `json:"deletable"`
			Blockers  []map[string]any `json:"blockers"`
		}
		e.call("GET", userPath+"/deletion-check", admin, nil, 200, &dc)
		var got []string
		for _, b := range dc.Blockers {
			got = append(got, b["kind"].(string))
		}
		if diff := cmp.Diff(kinds, got); diff != "" || dc.Deletable != (len(kinds) == 0) || dc.Blockers == nil {
			t.Fatalf("deletion-check = %+v; kinds (-want +got):\n%s", dc, diff)
		}
	}
	// The check answers exactly what DELETE answered.
	var dc struct {
		Deletable bool             `json:"deletable"`
		Blockers  []map[string]any `json:"blockers"`
	}
	e.call("GET", userPath+"/deletion-check", admin, nil, 200, &dc)
	if diff := cmp.Diff(er.Error.Blockers, dc.Blockers); diff != "" || dc.Deletable {
		t.Fatalf("deletion-check differs from DELETE (-delete +check):\n%s", diff)
	}

	// The refusal is in the audit log and changed nothing.
	entries := e.auditEntries()
	if entries[0].Action != "user.delete" || entries[0].Result != "delete_blocked" || entries[0].TargetLabel != "1002 Ada Lovelace" {
		t.Errorf("newest audit entry = %+v, want the refused delete", entries[0])
	}
	e.call("GET", userPath, admin, nil, 200, nil)

	// The operator cannot be disabled (docs/account-model.md rule 5); set
	// another operator first.
	e.callErr("POST", userPath+"/disable", admin, nil, 409, "operator_extension")
	if entries := e.auditEntries(); entries[0].Action != "user.disable" || entries[0].Result != "operator_extension" {
		t.Errorf("refused disable not audited: %+v", entries[0])
	}
	op := e.createUser("1000", "Reception")
	var acct accountJSON
	e.call("PATCH", base, admin, `{"operator_extension": "1000"}`, 200, &acct)
	if acct.OperatorExtension != "1000" {
		t.Fatalf("operator = %q", acct.OperatorExtension)
	}
	check("enabled", "registration", "licence")

	e.call("POST", userPath+"/disable", admin, nil, 200, nil)
	check("registration", "licence")

	var so signOutJSON
	e.call("DELETE", userPath+"/registrations", admin, nil, 200, &so)
	if so.Removed != 1 || len(so.Registrations) != 1 || so.Registrations[0].MAC != "001565aabbcc" {
		t.Errorf("sign-out = %+v", so)
	}
	check("licence")

	// Reassigning the licence clears the last blocker; seats never shrink.
	e.call("POST", base+"/licences/"+lic.ID+"/assign", admin, map[string]string{"user_id": op.ID}, 200, &lic)
	if lic.UserID == nil || *lic.UserID != op.ID {
		t.Fatalf("reassigned licence = %+v", lic)
	}
	check()

	if status, body := e.do("DELETE", userPath, admin, nil); status != 204 || len(body) != 0 {
		t.Fatalf("DELETE = %d %s, want 204", status, body)
	}
	e.callErr("GET", userPath, admin, nil, 404, "not_found")
	e.call("GET", base, admin, nil, 200, &acct)
	if acct.Seats != (seatsJSON{Total: 1, Assigned: 1, Free: 0}) {
		t.Errorf("seats after delete = %+v", acct.Seats)
	}

	// History keeps the person.
	var found bool
	for _, en := range e.auditEntries() {
		if en.Action == "user.delete" && en.Result == "ok" {
			found = true
			if en.TargetLabel != "1002 Ada Lovelace" || en.Detail["extension"] != "1002" || en.Detail["name"] != "Ada Lovelace" {
				t.Errorf("delete audit entry = %+v", en)
			}
		}
	}
	if !found {
		t.Error("no audit entry for the delete")
	}
}

func TestSIPCredentials(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	viewer := e.token("default", "viewer")
	u := e.createUser("1002", "Ada Lovelace")
	const ua = "Yealink SIP-T54W 96.86.0.100 80:5e:c0:aa:bb:cc"
	e.register(u.ID, "sip:1002@192.0.2.7:5062", ua)

	var cr credentialsJSON
	e.call("GET", base+"/users/"+u.ID+"/sip-credentials", admin, nil, 200, &cr)
	if cr.Username != "1002" || len(cr.Password) < 16 || cr.Realm != "example.test" || cr.Domain != "example.test" {
		t.Fatalf("credentials = %+v", cr)
	}
	e.callErr("GET", base+"/users/"+u.ID+"/sip-credentials", viewer, nil, 403, "forbidden")
	if en := e.auditEntries()[0]; en.Action != "sip_credentials.get" || en.Result != "forbidden" {
		t.Errorf("refused read not audited: %+v", en)
	}
	var read bool
	for _, en := range e.auditEntries() {
		read = read || en.Action == "sip_credentials.read" && en.TargetID == u.ID
	}
	if !read {
		t.Error("credential read not audited")
	}

	// Never in lists, single objects other than its own, or the logs.
	for _, path := range []string{base + "/users", base + "/users/" + u.ID, base + "/registrations",
		base + "/users/" + u.ID + "/registrations", base + "/audit", base, "/api/v1/accounts"} {
		body := e.call("GET", path, admin, nil, 200, nil)
		if strings.Contains(string(body), cr.Password) {
			t.Errorf("GET %s shows the SIP password", path)
		}
	}

	var rotated credentialsJSON
	e.call("POST", base+"/users/"+u.ID+"/sip-credentials/rotate", admin, nil, 200, &rotated)
	if rotated.Password == cr.Password || rotated.Username != "1002" {
		t.Errorf("rotate = %+v", rotated)
	}
	if diff := cmp.Diff([]string{"default/805ec0aabbcc"}, e.notifier.Calls()); diff != "" {
		t.Errorf("check-syncs after rotate (-want +got):\n%s", diff)
	}
	if logs := e.logs.String(); strings.Contains(logs, cr.Password) || strings.Contains(logs, rotated.Password) ||
		strings.Contains(logs, admin) || strings.Contains(logs, providerSecret) {
		t.Error("a secret reached the log")
	}
}

func TestRegistrations(t *testing.T) {
	e := newEnv(t)
	viewer := e.token("default", "viewer")
	ada := e.createUser("1002", "Ada Lovelace")
	bob := e.createUser("1003", "Bob Soft")
	e.register(ada.ID, "sip:1002@192.0.2.7:5062", "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc")
	e.register(bob.ID, "sip:1003@198.51.100.4:50000", "Linphone/5.2")

	var rl registrationList
	e.call("GET", base+"/users/"+bob.ID+"/registrations", viewer, nil, 200, &rl)
	want := []registrationJSON{{UserID: bob.ID, Contact: "sip:1003@198.51.100.4:50000", Source: "192.0.2.7:5062", Transport: "udp",
		UserAgent: "Linphone/5.2", RegisteredAt: "2026-11-23T09:00:00Z", ExpiresAt: "2026-11-23T10:00:00Z"}}
	if diff := cmp.Diff(want, rl.Registrations); diff != "" {
		t.Errorf("user registrations (-want +got):\n%s", diff)
	}
	body := e.call("GET", base+"/users/"+bob.ID+"/registrations", viewer, nil, 200, nil)
	if strings.Contains(string(body), `"mac"`) {
		t.Errorf("a softphone's registration shows a mac: %s", body)
	}
	e.call("GET", base+"/registrations", viewer, nil, 200, &rl)
	if len(rl.Registrations) != 2 {
		t.Errorf("account registrations = %+v", rl.Registrations)
	}

	// Live means unexpired: the clock, not a sweeper, decides.
	e.clock.Advance(time.Hour)
	e.call("GET", base+"/registrations", viewer, nil, 200, &rl)
	if len(rl.Registrations) != 0 || rl.Registrations == nil {
		t.Errorf("after expiry = %#v, want []", rl.Registrations)
	}
	e.callErr("DELETE", base+"/users/"+bob.ID+"/registrations", viewer, nil, 403, "forbidden")
	e.callErr("GET", base+"/users/u-missing/registrations", viewer, nil, 404, "not_found")
}
