package admin

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func ring(timeout int, ids ...string) map[string]any {
	s := map[string]any{"type": "ring", "user_ids": ids}
	if timeout > 0 {
		s["timeout_s"] = timeout
	}
	return s
}

func flow(name string, steps ...map[string]any) map[string]any {
	return map[string]any{"name": name, "steps": steps}
}

func TestCallflows(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	viewer := e.token("default", "viewer")
	ada := e.createUser("1002", "Ada Lovelace")
	grace := e.createUser("1003", "Grace Hopper")
	var q queueJSON
	e.call("POST", base+"/queues", admin, `{"name": "Demo 1", "extension": "600"}`, 201, &q)

	var v1 callflowJSON
	e.call("POST", base+"/callflows", admin, flow("Sales line", ring(20, ada.ID, grace.ID), map[string]any{"type": "queue", "queue_id": q.ID}), 201, &v1)
	want := callflowJSON{ID: v1.ID, Lineage: v1.ID, Name: "Sales line", Version: 1, Status: "AVAILABLE",
		Steps:   []stepJSON{{Type: "ring", UserIDs: []string{ada.ID, grace.ID}, TimeoutS: 20}, {Type: "queue", QueueID: q.ID}},
		Numbers: []string{}, CreatedAt: "2026-11-23T09:00:00Z"}
	if diff := cmp.Diff(want, v1); diff != "" || v1.ID == "" {
		t.Fatalf("created callflow (-want +got):\n%s", diff)
	}
	if raw := string(e.call("GET", base+"/callflows/"+v1.ID, viewer, nil, 200, nil)); !strings.Contains(raw, `"numbers":[]`) {
		t.Errorf("GET %s: numbers is not []", raw)
	}

	// Refusals name the field.
	for _, tc := range []struct {
		body  any
		field string
	}{
		{`{"name": "Empty", "steps": []}`, "steps"},
		{flow("No users", map[string]any{"type": "ring", "user_ids": []string{}}), "steps[0].user_ids"},
		{flow("Ghost", ring(0, "u-ghost")), "steps[0].user_ids"},
		{flow("No queue", map[string]any{"type": "queue", "queue_id": "q-nope"}), "steps[0].queue_id"},
		{flow("Odd", map[string]any{"type": "voicemail"}), "steps[0].type"},
		{flow("Slow", ring(601, ada.ID)), "steps[0].timeout_s"},
		{flow("", ring(0, ada.ID)), "name"},
	} {
		if er := e.callErr("POST", base+"/callflows", admin, tc.body, 400, "invalid"); er.Error.Fields[tc.field] == "" {
			t.Errorf("POST %v: fields %v, want %q", tc.body, er.Error.Fields, tc.field)
		}
	}
	e.callErr("POST", base+"/callflows", viewer, flow("V", ring(0, ada.ID)), 403, "forbidden")

	// A number makes it ACTIVE; an ACTIVE callflow cannot be deleted.
	e.call("POST", base+"/numbers", providerSecret, `{"e164": "+442079460000"}`, 201, nil)
	e.call("POST", base+"/numbers/442079460000/activate", admin, map[string]string{"callflow_id": v1.ID}, 200, nil)
	var active struct {
		Error struct {
			Code    string   `json:"code"`
			Numbers []string `json:"numbers"`
		} `json:"error"`
	}
	e.call("DELETE", base+"/callflows/"+v1.ID, admin, nil, 409, &active)
	if active.Error.Code != "callflow_active" || len(active.Error.Numbers) != 1 || active.Error.Numbers[0] != "+442079460000" {
		t.Errorf("DELETE ACTIVE = %+v", active)
	}

	// PUT makes a new version that takes the numbers; the old one stays, AVAILABLE.
	var v2 callflowJSON
	e.call("PUT", base+"/callflows/"+v1.ID, admin, flow("Sales line", ring(20, grace.ID)), 201, &v2)
	if v2.ID == v1.ID || v2.Lineage != v1.ID || v2.Version != 2 || v2.Status != "ACTIVE" || !cmp.Equal(v2.Numbers, []string{"+442079460000"}) {
		t.Errorf("new version = %+v", v2)
	}
	e.call("GET", base+"/callflows/"+v1.ID, viewer, nil, 200, &v1)
	if v1.Status != "AVAILABLE" || len(v1.Numbers) != 0 || v1.Version != 1 {
		t.Errorf("old version = %+v", v1)
	}
	// Editing the old version never reuses a version number.
	var v3 callflowJSON
	e.call("PUT", base+"/callflows/"+v1.ID, admin, flow("Sales line", ring(0, ada.ID)), 201, &v3)
	if v3.Version != 3 || v3.Status != "AVAILABLE" {
		t.Errorf("edit of v1 = %+v", v3)
	}
	e.callErr("PUT", base+"/callflows/cf-nope", admin, flow("X", ring(0, ada.ID)), 404, "not_found")

	var list callflowList
	e.call("GET", base+"/callflows", viewer, nil, 200, &list)
	var versions []int
	for _, cf := range list.Callflows {
		versions = append(versions, cf.Version)
	}
	if diff := cmp.Diff([]int{3, 2, 1}, versions); diff != "" {
		t.Errorf("list versions (-want +got):\n%s", diff)
	}

	// Reassign moves every number.
	if er := e.callErr("POST", base+"/callflows/"+v2.ID+"/reassign", admin, map[string]string{"to": v2.ID}, 400, "invalid"); er.Error.Field != "to" {
		t.Errorf("reassign to itself: field %q", er.Error.Field)
	}
	e.callErr("POST", base+"/callflows/"+v2.ID+"/reassign", admin, `{"to": "cf-nope"}`, 400, "invalid")
	var moved callflowReassigned
	e.call("POST", base+"/callflows/"+v2.ID+"/reassign", admin, map[string]string{"to": v3.ID}, 200, &moved)
	if moved.ID != v2.ID || moved.Status != "AVAILABLE" || len(moved.Numbers) != 0 ||
		moved.ReassignedTo.ID != v3.ID || moved.ReassignedTo.Status != "ACTIVE" || !cmp.Equal(moved.ReassignedTo.Numbers, []string{"+442079460000"}) {
		t.Errorf("reassign = %+v", moved)
	}
	e.call("DELETE", base+"/callflows/"+v2.ID, admin, nil, 204, nil)
	e.callErr("GET", base+"/callflows/"+v2.ID, viewer, nil, 404, "not_found")
}

// TestJetSequence follows the Jet article step by step through the API:
// user 1002 is in queue "Demo 1", has a direct line with a number, and is
// rung by a group callflow. Every blocker is listed at once; each is cleared
// the way the article says; the user is deleted; the number is recycled onto
// a new user's direct line.
func TestJetSequence(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	ada := e.createUser("1002", "Ada Lovelace")
	grace := e.createUser("1003", "Grace Hopper")
	userPath := base + "/users/" + ada.ID

	// The account as the article finds it.
	var demo queueJSON
	e.call("POST", base+"/queues", admin, map[string]any{"name": "Demo 1", "extension": "600", "members": []string{ada.ID, grace.ID}}, 201, &demo)
	var direct, sales, team callflowJSON
	e.call("POST", base+"/callflows", admin, flow("Ada direct", ring(0, ada.ID)), 201, &direct)
	e.call("POST", base+"/callflows", admin, flow("Sales line", ring(20, ada.ID, grace.ID), map[string]any{"type": "queue", "queue_id": demo.ID}), 201, &sales)
	e.call("POST", base+"/callflows", admin, flow("Team line", ring(0, grace.ID)), 201, &team)
	for num, cf := range map[string]string{"+442079460000": direct.ID, "+442079460001": sales.ID} {
		e.call("POST", base+"/numbers", providerSecret, map[string]string{"e164": num}, 201, nil)
		e.call("POST", base+"/numbers/"+num+"/activate", admin, map[string]string{"callflow_id": cf}, 200, nil)
	}

	// "Hit Delete on this user": every queue and callflow at once.
	er := e.callErr("DELETE", userPath, admin, nil, 409, "delete_blocked")
	wantBlockers := []map[string]any{
		{"kind": "enabled", "detail": "disable the user first"},
		{"kind": "queue", "id": demo.ID, "name": "Demo 1"},
		{"kind": "callflow", "id": direct.ID, "name": "Ada direct", "version": 1.0, "status": "ACTIVE"},
		{"kind": "callflow", "id": sales.ID, "name": "Sales line", "version": 1.0, "status": "ACTIVE"},
	}
	if diff := cmp.Diff(wantBlockers, er.Error.Blockers); diff != "" {
		t.Fatalf("blockers (-want +got):\n%s", diff)
	}
	kinds := func() []string {
		t.Helper()
		var dc struct {
			Deletable bool             `json:"deletable"`
			Blockers  []map[string]any `json:"blockers"`
		}
		e.call("GET", userPath+"/deletion-check", admin, nil, 200, &dc)
		var out []string
		for _, b := range dc.Blockers {
			out = append(out, b["kind"].(string)+" "+strOf(b["name"])+" "+strOf(b["status"]))
		}
		if dc.Deletable != (len(out) == 0) {
			t.Fatalf("deletable = %v with %v", dc.Deletable, out)
		}
		return out
	}
	if diff := cmp.Diff([]string{"enabled  ", "queue Demo 1 ", "callflow Ada direct ACTIVE", "callflow Sales line ACTIVE"}, kinds()); diff != "" {
		t.Fatalf("deletion-check (-want +got):\n%s", diff)
	}

	// 1. Removing the user from Queues.
	var q queueJSON
	e.call("DELETE", base+"/queues/"+demo.ID+"/members/"+ada.ID, admin, nil, 200, &q)
	if !cmp.Equal(q.Members, []string{grace.ID}) {
		t.Fatalf("queue members = %v", q.Members)
	}

	// 2a. Direct line: reassign its numbers (it becomes AVAILABLE), then delete it.
	var moved callflowReassigned
	e.call("POST", base+"/callflows/"+direct.ID+"/reassign", admin, map[string]string{"to": team.ID}, 200, &moved)
	if moved.Status != "AVAILABLE" || moved.ReassignedTo.Status != "ACTIVE" || !cmp.Equal(moved.ReassignedTo.Numbers, []string{"+442079460000"}) {
		t.Fatalf("reassign = %+v", moved)
	}
	e.call("DELETE", base+"/callflows/"+direct.ID, admin, nil, 204, nil)

	// 2b. Group callflow: edit without the user (a new ACTIVE version); the
	// old version, now AVAILABLE, still names them and still blocks.
	var salesV2 callflowJSON
	e.call("PUT", base+"/callflows/"+sales.ID, admin, flow("Sales line", ring(20, grace.ID), map[string]any{"type": "queue", "queue_id": demo.ID}), 201, &salesV2)
	if salesV2.Version != 2 || salesV2.Status != "ACTIVE" || !cmp.Equal(salesV2.Numbers, []string{"+442079460001"}) {
		t.Fatalf("sales v2 = %+v", salesV2)
	}
	if diff := cmp.Diff([]string{"enabled  ", "callflow Sales line AVAILABLE"}, kinds()); diff != "" {
		t.Fatalf("deletion-check after the edit (-want +got):\n%s", diff)
	}
	e.call("DELETE", base+"/callflows/"+sales.ID, admin, nil, 204, nil)

	// 3. Removing the Phone User: disable, then delete.
	e.call("POST", userPath+"/disable", admin, nil, 200, nil)
	if got := kinds(); len(got) != 0 {
		t.Fatalf("still blocked by %v", got)
	}
	e.call("DELETE", userPath, admin, nil, 204, nil)
	e.callErr("GET", userPath, admin, nil, 404, "not_found")

	// 4. Recycling the phone number onto a new user's direct line.
	bob := e.createUser("1004", "Bob Bobson")
	var bobLine callflowJSON
	e.call("POST", base+"/callflows", admin, flow("Bob direct", ring(0, bob.ID)), 201, &bobLine)
	var n numberJSON
	e.call("POST", base+"/numbers/442079460000/deactivate", admin, nil, 200, &n)
	if n.Status != "available" || n.CallflowID != nil {
		t.Fatalf("deactivated = %+v", n)
	}
	var avail numberList
	e.call("GET", base+"/numbers?status=available", admin, nil, 200, &avail)
	if len(avail.Numbers) != 1 || avail.Numbers[0].E164 != "+442079460000" {
		t.Fatalf("available numbers = %+v", avail)
	}
	e.call("POST", base+"/numbers/442079460000/activate", admin, map[string]string{"callflow_id": bobLine.ID}, 200, &n)
	var held []string
	for _, p := range n.History {
		held = append(held, p.CallflowName)
	}
	if n.Status != "active" || *n.CallflowID != bobLine.ID || !cmp.Equal(held, []string{"Ada direct", "Team line", "Bob direct"}) {
		t.Errorf("recycled number = %+v (history %v)", n, held)
	}

	// History keeps the person.
	found := false
	for _, en := range e.auditEntries() {
		if en.Action == "user.delete" && en.Result == "ok" && en.TargetLabel == "1002 Ada Lovelace" {
			found = true
		}
	}
	if !found {
		t.Error("the deletion is not in the audit log with the user's extension and name")
	}
}

func strOf(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}
