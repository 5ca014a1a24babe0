package store_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/dialtone-voip/dialtone/store"
)

func TestCallflowValidation(t *testing.T) {
	a := newAcme(t)
	ada := a.user("1002", "Ada Lovelace")
	q := a.queue("Demo 1", "600", ada.ID)
	g := a.group(store.GroupRing, "Sales", "700", ada.ID)
	for _, tc := range []struct {
		name  string
		spec  store.CallflowSpec
		field string
	}{
		{"NoName", store.CallflowSpec{Steps: []store.Step{ring(ada.ID)}}, "name"},
		{"NoSteps", store.CallflowSpec{Name: "X"}, "steps"},
		{"BadType", store.CallflowSpec{Name: "X", Steps: []store.Step{{Type: "voicemail"}}}, "steps[0].type"},
		{"EmptyRing", store.CallflowSpec{Name: "X", Steps: []store.Step{{Type: "ring"}}}, "steps[0].user_ids"},
		{"UnknownUser", store.CallflowSpec{Name: "X", Steps: []store.Step{ring(ada.ID, "u-nobody")}}, "steps[0].user_ids"},
		{"UserTwice", store.CallflowSpec{Name: "X", Steps: []store.Step{ring(ada.ID, ada.ID)}}, "steps[0].user_ids"},
		{"UnknownQueue", store.CallflowSpec{Name: "X", Steps: []store.Step{ring(ada.ID), {Type: "queue", QueueID: "q-nothing"}}}, "steps[1].queue_id"},
		{"UnknownGroup", store.CallflowSpec{Name: "X", Steps: []store.Step{{Type: "group", GroupID: "g-nothing"}}}, "steps[0].group_id"},
		{"QueueWithUsers", store.CallflowSpec{Name: "X", Steps: []store.Step{{Type: "queue", QueueID: q.ID, UserIDs: []string{ada.ID}}}}, "steps[0].type"},
		{"Timeout", store.CallflowSpec{Name: "X", Steps: []store.Step{{Type: "ring", UserIDs: []string{ada.ID}, TimeoutS: -1}}}, "steps[0].timeout_s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.db.CreateCallflow(a.id, tc.spec, ops)
			wantInvalid(t, err, tc.field)
		})
	}
	t.Run("OK", func(t *testing.T) {
		cf := a.callflow("Sales line", ring(ada.ID), store.Step{Type: " Queue ", QueueID: q.ID}, store.Step{Type: "group", GroupID: g.ID})
		if cf.Version != 1 || cf.Status != store.CallflowAvailable || len(cf.Numbers) != 0 || cf.Numbers == nil || cf.Lineage != cf.ID {
			t.Fatalf("created = %+v", cf)
		}
		if cf.Steps[1].Type != store.StepQueue {
			t.Fatalf("step type not normalised: %q", cf.Steps[1].Type)
		}
	})
}

func TestCallflowVersions(t *testing.T) {
	a := newAcme(t)
	ada, bob := a.user("1002", "Ada Lovelace"), a.user("1003", "Bob Byte")
	v1 := a.callflow("Sales line", ring(ada.ID, bob.ID)) // ring several at once
	a.number("+442079460001", v1.ID)
	a.number("+442079460002", v1.ID)

	v2, err := a.db.NewCallflowVersion(a.id, v1.ID, store.CallflowSpec{Name: "Sales line", Steps: []store.Step{ring(bob.ID)}}, ops)
	a.ok(err)
	if v2.ID == v1.ID || v2.Version != 2 || v2.Lineage != v1.ID || v2.Status != store.CallflowActive ||
		!slices.Equal(v2.Numbers, []string{"+442079460001", "+442079460002"}) {
		t.Fatalf("v2 = %+v", v2)
	}
	old, err := a.db.Callflow(a.id, v1.ID)
	a.ok(err)
	if old.Status != store.CallflowAvailable || len(old.Numbers) != 0 || old.Version != 1 {
		t.Fatalf("v1 after edit = %+v", old)
	}
	// Every version naming a user is its own blocker, ACTIVE or AVAILABLE.
	bs, err := a.db.DeletionCheck(a.id, bob.ID)
	a.ok(err)
	var got []store.Blocker
	for _, b := range bs {
		if b.Kind == "callflow" {
			got = append(got, b)
		}
	}
	if len(got) != 2 || got[0].ID != v2.ID || got[0].Version != 2 || got[0].Status != "ACTIVE" || got[0].Name != "Sales line" ||
		got[1].ID != v1.ID || got[1].Version != 1 || got[1].Status != "AVAILABLE" {
		t.Fatalf("callflow blockers of bob = %+v", got)
	}
	if got := a.blockers(ada.ID); !slices.Equal(got, []string{"enabled", "callflow:" + v1.ID}) {
		t.Fatalf("ada blockers = %v", got)
	}

	// Editing an old version numbers the new one after the newest.
	v3, err := a.db.NewCallflowVersion(a.id, v1.ID, store.CallflowSpec{Name: "Sales line", Steps: []store.Step{ring(ada.ID)}}, ops)
	a.ok(err)
	if v3.Version != 3 || v3.Status != store.CallflowAvailable {
		t.Fatalf("v3 = %+v", v3)
	}

	t.Run("DeleteActiveRefused", func(t *testing.T) {
		r := wantRule(t, a.db.DeleteCallflow(a.id, v2.ID, ops), "callflow_active")
		if got := r.Detail["numbers"].([]string); !slices.Equal(got, []string{"+442079460001", "+442079460002"}) {
			t.Fatalf("detail numbers = %v", got)
		}
		if r.Kind != store.KindConflict {
			t.Fatalf("kind = %q", r.Kind)
		}
	})

	t.Run("Reassign", func(t *testing.T) {
		from, to, err := a.db.ReassignCallflow(a.id, v2.ID, v3.ID, ops)
		a.ok(err)
		if from.Status != store.CallflowAvailable || to.Status != store.CallflowActive || len(to.Numbers) != 2 {
			t.Fatalf("after reassign from=%+v to=%+v", from, to)
		}
		_, _, err = a.db.ReassignCallflow(a.id, v3.ID, v3.ID, ops)
		wantInvalid(t, err, "to")
		_, _, err = a.db.ReassignCallflow(a.id, v3.ID, "cf-nothing", ops)
		wantInvalid(t, err, "to")
	})

	t.Run("DeleteAvailable", func(t *testing.T) {
		a.ok(a.db.DeleteCallflow(a.id, v1.ID, ops))
		a.ok(a.db.DeleteCallflow(a.id, v2.ID, ops))
		if _, err := a.db.Callflow(a.id, v1.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Callflow after delete = %v", err)
		}
		cfs, err := a.db.Callflows(a.id)
		a.ok(err)
		if len(cfs) != 1 || cfs[0].ID != v3.ID {
			t.Fatalf("callflows = %+v", cfs)
		}
		if got := a.blockers(bob.ID); !slices.Equal(got, []string{"enabled"}) {
			t.Fatalf("bob blockers = %v", got)
		}
	})
}

func TestRoute(t *testing.T) {
	a := newAcme(t)
	ada, bob, cy := a.user("1002", "Ada Lovelace"), a.user("1003", "Bob Byte"), a.user("1004", "Cy Cable")
	q := a.queue("Demo 1", "600", bob.ID, ada.ID)
	g := a.group(store.GroupPaging, "Warehouse", "700", cy.ID, bob.ID)
	direct := a.callflow("Ada direct", ring(ada.ID))
	several := a.callflow("Front desk", ring(ada.ID, bob.ID), store.Step{Type: "queue", QueueID: q.ID})
	toQueue := a.callflow("Support", store.Step{Type: "queue", QueueID: q.ID, TimeoutS: 30})
	toGroup := a.callflow("Paging", store.Step{Type: "group", GroupID: g.ID})
	a.number("+442079460000", direct.ID)
	a.number("+442079460001", several.ID)
	a.number("+442079460002", toQueue.ID)
	a.number("+442079460003", toGroup.ID)
	a.number("+442079460009", "")
	_, err := a.db.DisableUser(a.id, ada.ID, ops)
	a.ok(err)

	for _, tc := range []struct {
		target   string
		kind     string
		users    []string
		disabled bool
		callflow string
	}{
		{"1002", store.RouteUser, []string{ada.ID}, true, ""},
		{"1003", store.RouteUser, []string{bob.ID}, false, ""},
		{"600", store.RouteQueue, []string{bob.ID, ada.ID}, false, ""},
		{"700", store.RouteGroup, []string{cy.ID, bob.ID}, false, ""},
		{"+442079460000", store.RouteNumber, []string{ada.ID}, false, direct.ID},
		{"442079460000", store.RouteNumber, []string{ada.ID}, false, direct.ID},
		{"442079460001", store.RouteNumber, []string{ada.ID, bob.ID}, false, several.ID},
		{"+442079460002", store.RouteNumber, []string{bob.ID, ada.ID}, false, toQueue.ID},
		{"+442079460003", store.RouteNumber, []string{cy.ID, bob.ID}, false, toGroup.ID},
	} {
		r, err := a.db.Route(a.id, tc.target)
		if err != nil {
			t.Fatalf("Route(%s) = %v", tc.target, err)
		}
		if r.Kind != tc.kind || !slices.Equal(r.UserIDs, tc.users) || r.Disabled != tc.disabled {
			t.Errorf("Route(%s) = %+v; want kind %s users %v disabled %v", tc.target, r, tc.kind, tc.users, tc.disabled)
		}
		if tc.callflow != "" && (r.Callflow == nil || r.Callflow.ID != tc.callflow || r.Step == nil) {
			t.Errorf("Route(%s) callflow = %+v, want %s", tc.target, r.Callflow, tc.callflow)
		}
	}
	if r, _ := a.db.Route(a.id, "+442079460002"); r.TimeoutS != 30 {
		t.Errorf("queue step timeout = %d", r.TimeoutS)
	}
	if r, _ := a.db.Route(a.id, "700"); r.GroupKind != store.GroupPaging {
		t.Errorf("group kind = %q", r.GroupKind)
	}
	for _, target := range []string{"+442079460009", "+442079469999", "1999", "sip", ""} {
		if _, err := a.db.Route(a.id, target); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Route(%q) = %v, want ErrNotFound", target, err)
		}
	}
	// A disabled group behaves like a disabled user, dialled directly or through a number.
	_, err = a.db.DisableGroup(a.id, g.ID, ops)
	a.ok(err)
	for _, target := range []string{"700", "+442079460003"} {
		if r, err := a.db.Route(a.id, target); err != nil || !r.Disabled {
			t.Errorf("Route(%s) after disable = %+v, %v; want Disabled", target, r, err)
		}
	}
}

// TestJetSequence is an offboarding done by hand in the order one hosted
// phone provider documents for its admins: remove the user from queues,
// reassign their direct line, edit the group callflow (a new version) and
// delete the AVAILABLE version, delete the user, then recycle the number onto
// a new user's callflow (docs/account-model.md rules 2, 9, 10).
func TestJetSequence(t *testing.T) {
	a := newAcme(t)
	ada := a.user("1002", "Ada Lovelace")
	sup := a.user("1001", "Sam Supervisor")
	bob := a.user("1003", "Bob Byte")
	demo := a.queue("Demo 1", "600", ada.ID, bob.ID)
	direct := a.callflow("Ada direct", ring(ada.ID))
	supLine := a.callflow("Sam direct", ring(sup.ID))
	sales := a.callflow("Sales line", ring(ada.ID, bob.ID), store.Step{Type: "queue", QueueID: demo.ID})
	a.number("+442079460000", direct.ID)
	a.number("+442079460001", sales.ID)
	a.licence(ada.ID)
	a.register(ada, "sip:1002@192.0.2.7:5062")

	// The quick tip: try to delete, and read every blocker at once.
	var inUse *store.InUseError
	if err := a.db.DeleteUser(a.id, ada.ID, ops); !errors.As(err, &inUse) {
		t.Fatalf("DeleteUser = %v, want InUseError", err)
	}
	var kinds []string
	for _, b := range inUse.Blockers {
		kinds = append(kinds, b.Kind)
	}
	if want := []string{"enabled", "registration", "queue", "callflow", "callflow", "licence"}; !slices.Equal(kinds, want) {
		t.Fatalf("blockers = %v, want %v (docs/account-model.md order)", kinds, want)
	}

	// 1. Remove the user from queues.
	_, err := a.db.RemoveQueueMember(a.id, demo.ID, ada.ID, ops)
	a.ok(err)

	// 2a. Direct line: reassign its numbers to the supervisor, then delete it.
	from, to, err := a.db.ReassignCallflow(a.id, direct.ID, supLine.ID, ops)
	a.ok(err)
	if from.Status != store.CallflowAvailable || to.Status != store.CallflowActive {
		t.Fatalf("after reassign: %s %s", from.Status, to.Status)
	}
	a.ok(a.db.DeleteCallflow(a.id, direct.ID, ops))

	// 2b. Group callflow: edit (a new ACTIVE version), then delete the AVAILABLE one.
	v2, err := a.db.NewCallflowVersion(a.id, sales.ID, store.CallflowSpec{Name: "Sales line",
		Steps: []store.Step{ring(bob.ID), {Type: "queue", QueueID: demo.ID}}}, ops)
	a.ok(err)
	if v2.Status != store.CallflowActive || v2.Version != 2 || !slices.Equal(v2.Numbers, []string{"+442079460001"}) {
		t.Fatalf("v2 = %+v", v2)
	}
	bs, err := a.db.DeletionCheck(a.id, ada.ID)
	a.ok(err)
	if !slices.ContainsFunc(bs, func(b store.Blocker) bool {
		return b.Kind == "callflow" && b.ID == sales.ID && b.Status == "AVAILABLE" && b.Version == 1
	}) {
		t.Fatalf("the AVAILABLE v1 must still block: %+v", bs)
	}
	a.ok(a.db.DeleteCallflow(a.id, sales.ID, ops))

	// 3. Remove the phone user: log them out, disable, move the licence, delete.
	_, err = a.db.SignOut(a.id, ada.ID, ops)
	a.ok(err)
	_, err = a.db.DisableUser(a.id, ada.ID, ops)
	a.ok(err)
	lics, err := a.db.Licences(a.id)
	a.ok(err)
	_, err = a.db.ReleaseLicence(a.id, lics[0].ID, ops)
	a.ok(err)
	if got := a.blockers(ada.ID); len(got) != 0 {
		t.Fatalf("blockers left = %v", got)
	}
	a.ok(a.db.DeleteUser(a.id, ada.ID, ops))
	if seats, _ := a.db.Seats(a.id); seats.Total != 1 || seats.Free != 1 {
		t.Fatalf("seats = %+v: deleting never reduces paid seats", seats)
	}

	// 4. Recycle the number: deactivate it, set it up against a new user.
	n, err := a.db.DeactivateNumber(a.id, "442079460000", ops)
	a.ok(err)
	if n.Status != store.NumberAvailable {
		t.Fatalf("number = %+v", n)
	}
	avail, err := a.db.Numbers(a.id, "available")
	a.ok(err)
	if len(avail) != 1 || avail[0].E164 != "+442079460000" {
		t.Fatalf("available numbers = %+v", avail)
	}
	nell := a.user("1002", "Nell Newhire") // the extension is free again too
	nellLine := a.callflow("Nell direct", ring(nell.ID))
	n, err = a.db.ActivateNumber(a.id, "+442079460000", nellLine.ID, ops)
	a.ok(err)
	var names []string
	for _, p := range n.History {
		names = append(names, p.CallflowName)
	}
	if want := []string{"Ada direct", "Sam direct", "Nell direct"}; !slices.Equal(names, want) {
		t.Fatalf("number history = %v, want %v", names, want)
	}
	if r, err := a.db.Route(a.id, "+442079460000"); err != nil || !slices.Equal(r.UserIDs, []string{nell.ID}) {
		t.Fatalf("Route = %+v, %v", r, err)
	}
}
