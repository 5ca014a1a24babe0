package store_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/dialtone-voip/dialtone/store"
)

func TestGroup(t *testing.T) {
	a := newAcme(t)
	ada, bob := a.user("1002", "Ada Lovelace"), a.user("1003", "Bob Byte")

	t.Run("Validation", func(t *testing.T) {
		_, err := a.db.CreateGroup(a.id, store.NewGroup{Kind: "hunt", Name: "X", Extension: "700"}, ops)
		wantInvalid(t, err, "kind")
		_, err = a.db.CreateGroup(a.id, store.NewGroup{Kind: "ring", Name: "X", Extension: "700", Members: []string{"u-nobody"}}, ops)
		wantInvalid(t, err, "members")
		_, err = a.db.CreateGroup(a.id, store.NewGroup{Kind: "ring", Name: "X", Extension: "1002"}, ops)
		wantInvalid(t, err, "extension")
	})

	t.Run("DisableEnableDelete", func(t *testing.T) {
		g := a.group(store.GroupPaging, "Warehouse", "700", ada.ID)
		if g.Status != store.StatusEnabled {
			t.Fatalf("status = %q", g.Status)
		}
		wantRule(t, a.db.DeleteGroup(a.id, g.ID, ops), "group_enabled")
		g, err := a.db.DisableGroup(a.id, g.ID, ops)
		a.ok(err)
		if g.Status != store.StatusDisabled {
			t.Fatalf("status = %q", g.Status)
		}
		g, err = a.db.EnableGroup(a.id, g.ID, ops)
		a.ok(err)
		if g.Status != store.StatusEnabled || !slices.Equal(g.Members, []string{ada.ID}) || g.Extension != "700" {
			t.Fatalf("re-enabled group = %+v", g)
		}
		_, err = a.db.DisableGroup(a.id, g.ID, ops)
		a.ok(err)
		a.ok(a.db.DeleteGroup(a.id, g.ID, ops))
		if _, err := a.db.Group(a.id, g.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Group after delete = %v", err)
		}
		if _, _, err := a.db.ExtensionOwner(a.id, "700"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("extension not released: %v", err)
		}
	})

	t.Run("Members", func(t *testing.T) {
		g := a.group(store.GroupRing, "Sales", "710")
		g, err := a.db.AddGroupMember(a.id, g.ID, bob.ID, ops)
		a.ok(err)
		g, err = a.db.AddGroupMember(a.id, g.ID, ada.ID, ops)
		a.ok(err)
		if !slices.Equal(g.Members, []string{bob.ID, ada.ID}) {
			t.Fatalf("members = %v", g.Members)
		}
		g, err = a.db.RemoveGroupMember(a.id, g.ID, bob.ID, ops)
		a.ok(err)
		if !slices.Equal(g.Members, []string{ada.ID}) {
			t.Fatalf("members = %v", g.Members)
		}
		name, ext := "Sales team", "711"
		g, err = a.db.UpdateGroup(a.id, g.ID, store.GroupPatch{Name: &name, Extension: &ext}, ops)
		a.ok(err)
		if g.Label() != "711 Sales team" {
			t.Fatalf("label = %q", g.Label())
		}
	})

	t.Run("InUseByCallflow", func(t *testing.T) {
		g := a.group(store.GroupRing, "Night", "720", bob.ID)
		a.callflow("Night line", store.Step{Type: "group", GroupID: g.ID})
		_, err := a.db.DisableGroup(a.id, g.ID, ops)
		a.ok(err)
		wantRule(t, a.db.DeleteGroup(a.id, g.ID, ops), "group_in_use")
	})

	t.Run("MembershipDoesNotBlockDeletion", func(t *testing.T) {
		cy := a.user("1004", "Cy Cable")
		g1 := a.group(store.GroupRing, "Ring A", "730", cy.ID, bob.ID)
		g2 := a.group(store.GroupPaging, "Page B", "731", cy.ID)
		_, err := a.db.DisableUser(a.id, cy.ID, ops)
		a.ok(err)
		if got := a.blockers(cy.ID); len(got) != 0 {
			t.Fatalf("blockers = %v, want none", got)
		}
		a.ok(a.db.DeleteUser(a.id, cy.ID, ops))
		for _, id := range []string{g1.ID, g2.ID} {
			g, err := a.db.Group(a.id, id)
			a.ok(err)
			if slices.Contains(g.Members, cy.ID) {
				t.Fatalf("group %s still lists the deleted user", g.Name)
			}
		}
		es, err := a.db.Audit(a.id, 100, 0)
		a.ok(err)
		n := 0
		for _, e := range es {
			if e.Action == "group.member_remove" && e.Detail["reason"] == "user deleted" && strings.Contains(e.Detail["user"], "1004 Cy Cable") {
				n++
			}
		}
		if n != 2 {
			t.Fatalf("audit entries for group removals = %d, want 2", n)
		}
	})
}

// TestBTSequence is a leaver handled the way another provider documents it:
// disable, licence reassign, delete; a paging group disabled then deleted; the
// operator extension changed before its user can be disabled
// (docs/account-model.md rules 3, 4, 5, 11).
func TestBTSequence(t *testing.T) {
	a := newAcme(t)
	rec := a.user("1000", "Reception")
	ada := a.user("1002", "Ada Lovelace")
	newHire := a.user("1005", "Nell Newhire")
	lic := a.licence(ada.ID)
	paging := a.group(store.GroupPaging, "All phones", "700", rec.ID, ada.ID)
	op := "1002"
	_, err := a.db.UpdateAccount(a.id, store.AccountPatch{OperatorExtension: &op}, ops)
	a.ok(err)

	// Ada is the operator: she cannot be disabled, and deleting her lists it.
	_, err = a.db.DisableUser(a.id, ada.ID, ops)
	wantRule(t, err, "operator_extension")
	if got, want := a.blockers(ada.ID), []string{"enabled", "licence:" + lic.ID, "operator"}; !slices.Equal(got, want) {
		t.Fatalf("blockers = %v, want %v", got, want)
	}

	// Set another operator first, then disable.
	op = "1000"
	_, err = a.db.UpdateAccount(a.id, store.AccountPatch{OperatorExtension: &op}, ops)
	a.ok(err)
	u, err := a.db.DisableUser(a.id, ada.ID, ops)
	a.ok(err)
	if u.Status != store.StatusDisabled {
		t.Fatalf("status = %q", u.Status)
	}
	if r, err := a.db.Route(a.id, "1002"); err != nil || !r.Disabled {
		t.Fatalf("calling a disabled user: %+v, %v; want Disabled (announcement)", r, err)
	}

	// Delete asks about the licence; reassigning it to someone else clears it.
	var inUse *store.InUseError
	if err := a.db.DeleteUser(a.id, ada.ID, ops); !errors.As(err, &inUse) || len(inUse.Blockers) != 1 || inUse.Blockers[0].Kind != "licence" {
		t.Fatalf("DeleteUser = %v, want a licence blocker only", err)
	}
	_, err = a.db.AssignLicence(a.id, lic.ID, newHire.ID, ops)
	a.ok(err)
	seats, err := a.db.Seats(a.id)
	a.ok(err)
	a.ok(a.db.DeleteUser(a.id, ada.ID, ops))
	after, err := a.db.Seats(a.id)
	a.ok(err)
	if after != seats || after.Total != 1 {
		t.Fatalf("seats %+v → %+v: deleting a user must not change them", seats, after)
	}

	// Paging group: delete is refused until it is disabled; membership of the
	// deleted user went with her.
	g, err := a.db.Group(a.id, paging.ID)
	a.ok(err)
	if !slices.Equal(g.Members, []string{rec.ID}) {
		t.Fatalf("paging members = %v", g.Members)
	}
	wantRule(t, a.db.DeleteGroup(a.id, paging.ID, ops), "group_enabled")
	_, err = a.db.DisableGroup(a.id, paging.ID, ops)
	a.ok(err)
	if r, err := a.db.Route(a.id, "700"); err != nil || !r.Disabled {
		t.Fatalf("calling a disabled group: %+v, %v", r, err)
	}
	a.ok(a.db.DeleteGroup(a.id, paging.ID, ops))
	if _, err := a.db.Route(a.id, "700"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Route(700) after delete = %v", err)
	}

	// History keeps the person.
	es, err := a.db.Audit(a.id, 100, 0)
	a.ok(err)
	if es[0].Action != "group.delete" || !slices.ContainsFunc(es, func(e store.AuditEntry) bool {
		return e.Action == "user.delete" && e.TargetLabel == "1002 Ada Lovelace"
	}) {
		t.Fatalf("audit does not show the deleted user: %+v", es[:3])
	}
}
