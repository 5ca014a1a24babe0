package admin

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestGroups(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	viewer := e.token("default", "viewer")
	ada := e.createUser("1002", "Ada Lovelace")
	grace := e.createUser("1003", "Grace Hopper")

	var g groupJSON
	e.call("POST", base+"/groups", admin, map[string]any{"kind": "ring", "name": "Sales", "extension": "701", "members": []string{ada.ID}}, 201, &g)
	want := groupJSON{ID: g.ID, Kind: "ring", Name: "Sales", Extension: "701", Members: []string{ada.ID}, Status: "enabled",
		CreatedAt: "2026-11-23T09:00:00Z", UpdatedAt: "2026-11-23T09:00:00Z"}
	if diff := cmp.Diff(want, g); diff != "" || g.ID == "" {
		t.Fatalf("created group (-want +got):\n%s", diff)
	}
	gPath := base + "/groups/" + g.ID
	for body, field := range map[string]string{
		`{"kind": "hunt", "name": "X", "extension": "702"}`:                       "kind",
		`{"kind": "ring", "name": "X", "extension": "701"}`:                       "extension",
		`{"kind": "paging", "name": "X", "extension": "7x"}`:                      "extension",
		`{"kind": "paging", "extension": "702", "name": ""}`:                      "name",
		`{"kind": "paging", "name": "X", "extension": "702", "members": ["u-x"]}`: "members",
	} {
		if er := e.callErr("POST", base+"/groups", admin, body, 400, "invalid"); er.Error.Field != field {
			t.Errorf("POST %s: field %q, want %q", body, er.Error.Field, field)
		}
	}
	e.callErr("POST", base+"/groups", viewer, `{"kind": "ring", "name": "X", "extension": "702"}`, 403, "forbidden")

	e.call("POST", gPath+"/members", admin, map[string]string{"user_id": grace.ID}, 200, &g)
	if !cmp.Equal(g.Members, []string{ada.ID, grace.ID}) {
		t.Errorf("members after add = %v", g.Members)
	}
	e.call("DELETE", gPath+"/members/"+grace.ID, admin, nil, 200, &g)
	e.callErr("DELETE", gPath+"/members/"+grace.ID, admin, nil, 404, "not_found")
	e.call("PATCH", gPath, admin, `{"name": "Sales team", "extension": "702"}`, 200, &g)
	if g.Name != "Sales team" || g.Extension != "702" || g.Kind != "ring" || !cmp.Equal(g.Members, []string{ada.ID}) {
		t.Errorf("PATCH = %+v", g)
	}
	if er := e.callErr("PATCH", gPath, admin, `{"kind": "paging"}`, 400, "invalid"); er.Error.Field != "kind" {
		t.Errorf("PATCH kind: field %q", er.Error.Field)
	}
	var list groupList
	e.call("GET", base+"/groups", viewer, nil, 200, &list)
	if len(list.Groups) != 1 || list.Groups[0].ID != g.ID {
		t.Errorf("list = %+v", list)
	}

	// Membership does not block a user's deletion; the user leaves the group.
	e.call("POST", base+"/users/"+ada.ID+"/disable", admin, nil, 200, nil)
	e.call("DELETE", base+"/users/"+ada.ID, admin, nil, 204, nil)
	e.call("GET", gPath, viewer, nil, 200, &g)
	if g.Members == nil || len(g.Members) != 0 {
		t.Errorf("members after the user's deletion = %v", g.Members)
	}
	var removed bool
	for _, en := range e.auditEntries() {
		removed = removed || en.Action == "group.member_remove" && en.Detail["reason"] == "user deleted" && en.Detail["user"] == "1002 Ada Lovelace"
	}
	if !removed {
		t.Error("the removal from the group is not in the audit log")
	}

	// A group a callflow sends calls to cannot go, even disabled.
	var cf callflowJSON
	e.call("POST", base+"/callflows", admin, flow("Sales line", map[string]any{"type": "group", "group_id": g.ID}), 201, &cf)
	e.call("POST", gPath+"/disable", admin, nil, 200, nil)
	e.callErr("DELETE", gPath, admin, nil, 409, "group_in_use")
	e.call("DELETE", base+"/callflows/"+cf.ID, admin, nil, 204, nil)
	e.call("DELETE", gPath, admin, nil, 204, nil)
	e.callErr("GET", gPath, viewer, nil, 404, "not_found")
	e.callErr("POST", gPath+"/enable", admin, nil, 404, "not_found")
}

// TestBTSequence follows the BT Cloud Phone article through the API: the
// operator cannot be disabled until another is set; a user with a licence
// cannot be deleted until it is reassigned, and seats never shrink; a paging
// group is disabled before it is deleted, and a disabled group can be
// enabled again.
func TestBTSequence(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	reception := e.createUser("1000", "Reception")
	ada := e.createUser("1002", "Ada Lovelace")
	userPath := base + "/users/" + ada.ID

	var lic licenceJSON
	e.call("POST", base+"/licences", providerSecret, `{"type": "cloud-phone"}`, 201, &lic)
	e.call("POST", base+"/licences", providerSecret, `{"type": "cloud-phone"}`, 201, nil)
	e.call("POST", base+"/licences/"+lic.ID+"/assign", admin, map[string]string{"user_id": ada.ID}, 200, nil)
	e.call("PATCH", base, admin, `{"operator_extension": "1002"}`, 200, nil)
	seats := func() seatsJSON {
		t.Helper()
		var a accountJSON
		e.call("GET", base, admin, nil, 200, &a)
		return a.Seats
	}
	if s := seats(); s != (seatsJSON{Total: 2, Assigned: 1, Free: 1}) {
		t.Fatalf("seats = %+v", s)
	}

	// Disabling Users: not the operator; change the operator first.
	e.callErr("POST", userPath+"/disable", admin, nil, 409, "operator_extension")
	var acct accountJSON
	e.call("PATCH", base, admin, `{"operator_extension": "1000"}`, 200, &acct)
	if acct.OperatorExtension != "1000" {
		t.Fatalf("operator = %q", acct.OperatorExtension)
	}
	var u userJSON
	e.call("POST", userPath+"/disable", admin, nil, 200, &u)
	if u.Status != "disabled" {
		t.Fatalf("disabled user = %+v", u)
	}

	// Deleting Users: the licence blocks until reassigned.
	er := e.callErr("DELETE", userPath, admin, nil, 409, "delete_blocked")
	if diff := cmp.Diff([]map[string]any{{"kind": "licence", "id": lic.ID}}, er.Error.Blockers); diff != "" {
		t.Fatalf("blockers (-want +got):\n%s", diff)
	}
	e.call("POST", base+"/licences/"+lic.ID+"/assign", admin, map[string]string{"user_id": reception.ID}, 200, &lic)
	if lic.UserID == nil || *lic.UserID != reception.ID {
		t.Fatalf("reassigned licence = %+v", lic)
	}
	if s := seats(); s != (seatsJSON{Total: 2, Assigned: 1, Free: 1}) {
		t.Fatalf("seats after reassign = %+v", s)
	}
	e.call("DELETE", userPath, admin, nil, 204, nil)
	if s := seats(); s.Total != 2 {
		t.Fatalf("seats after delete = %+v: deleting never lowers the total", s)
	}

	// Disabling and Deleting Groups (a paging group), and Enabling Groups.
	var g groupJSON
	e.call("POST", base+"/groups", admin, map[string]any{"kind": "paging", "name": "Warehouse", "extension": "700", "members": []string{reception.ID}}, 201, &g)
	gPath := base + "/groups/" + g.ID
	e.callErr("DELETE", gPath, admin, nil, 409, "group_enabled")
	e.call("POST", gPath+"/disable", admin, nil, 200, &g)
	if g.Status != "disabled" {
		t.Fatalf("disabled group = %+v", g)
	}
	e.call("POST", gPath+"/enable", admin, nil, 200, &g)
	if g.Status != "enabled" || !cmp.Equal(g.Members, []string{reception.ID}) {
		t.Fatalf("re-enabled group = %+v", g)
	}
	e.call("POST", gPath+"/disable", admin, nil, 200, nil)
	e.call("DELETE", gPath, admin, nil, 204, nil)
	e.callErr("GET", gPath, admin, nil, 404, "not_found")
}
