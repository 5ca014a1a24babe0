package store_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
)

// ops is the admin who acts in the account-model tests.
var ops = store.Actor{Name: "ops", Role: store.RoleAdmin}

// acme is one account in a store of its own, with a fake clock; reopen
// simulates a restart (or a crash between transactions).
type acme struct {
	t     *testing.T
	db    *store.DB
	clock *storetest.Clock
	dir   string
	id    string
}

func newAcme(t *testing.T) *acme {
	t.Helper()
	a := &acme{t: t, clock: storetest.NewClock(), dir: t.TempDir(), id: "acme"}
	a.db = storetest.OpenDir(t, a.dir, a.clock)
	if _, err := a.db.CreateAccount(a.id, "acme.test", ops); err != nil {
		t.Fatalf("CreateAccount() = %v", err)
	}
	return a
}

func (a *acme) reopen() {
	a.t.Helper()
	if err := a.db.Close(); err != nil {
		a.t.Fatalf("Close() = %v", err)
	}
	a.db = storetest.OpenDir(a.t, a.dir, a.clock)
}

func (a *acme) ok(err error) {
	a.t.Helper()
	if err != nil {
		a.t.Fatal(err)
	}
}

func (a *acme) user(ext, name string) store.User {
	a.t.Helper()
	u, err := a.db.CreateUser(a.id, store.NewUser{Extension: ext, Name: name}, ops)
	a.ok(err)
	return u
}

func (a *acme) queue(name, ext string, members ...string) store.Queue {
	a.t.Helper()
	q, err := a.db.CreateQueue(a.id, store.NewQueue{Name: name, Extension: ext, Members: members}, ops)
	a.ok(err)
	return q
}

func (a *acme) group(kind, name, ext string, members ...string) store.Group {
	a.t.Helper()
	g, err := a.db.CreateGroup(a.id, store.NewGroup{Kind: kind, Name: name, Extension: ext, Members: members}, ops)
	a.ok(err)
	return g
}

func ring(userIDs ...string) store.Step {
	return store.Step{Type: store.StepRing, UserIDs: userIDs, TimeoutS: 20}
}

func (a *acme) callflow(name string, steps ...store.Step) store.Callflow {
	a.t.Helper()
	cf, err := a.db.CreateCallflow(a.id, store.CallflowSpec{Name: name, Steps: steps}, ops)
	a.ok(err)
	return cf
}

// number adds e164 to the account and, if callflowID is set, activates it there.
func (a *acme) number(e164, callflowID string) store.Number {
	a.t.Helper()
	n, err := a.db.AddNumber(a.id, e164, ops)
	a.ok(err)
	if callflowID != "" {
		n, err = a.db.ActivateNumber(a.id, e164, callflowID, ops)
		a.ok(err)
	}
	return n
}

func (a *acme) licence(userID string) store.Licence {
	a.t.Helper()
	l, err := a.db.CreateLicence(a.id, "cloud-phone", ops)
	a.ok(err)
	if userID != "" {
		l, err = a.db.AssignLicence(a.id, l.ID, userID, ops)
		a.ok(err)
	}
	return l
}

func (a *acme) register(u store.User, contact string) {
	a.t.Helper()
	_, err := a.db.Register(store.RegisterRequest{AccountID: a.id, UserID: u.ID, CallID: "call-" + contact, CSeq: 1,
		Source: "192.0.2.7:5062", Transport: "udp", UserAgent: "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc",
		Contacts: []store.ContactUpdate{{URI: contact, Expires: 600}}})
	a.ok(err)
}

// blockers returns the deletion check as "kind" or "kind:id" strings.
func (a *acme) blockers(userID string) []string {
	a.t.Helper()
	bs, err := a.db.DeletionCheck(a.id, userID)
	a.ok(err)
	out := []string{}
	for _, b := range bs {
		s := b.Kind
		if b.ID != "" {
			s += ":" + b.ID
		}
		out = append(out, s)
	}
	return out
}

// audits counts the account's audit entries with action and result ("" = any).
func (a *acme) audits(action, result string) int {
	a.t.Helper()
	es, err := a.db.Audit(a.id, 1000, 0)
	a.ok(err)
	n := 0
	for _, e := range es {
		if e.Action == action && (result == "" || e.Result == result) {
			n++
		}
	}
	return n
}

func wantRule(t *testing.T, err error, code string) *store.RuleError {
	t.Helper()
	var r *store.RuleError
	if !errors.As(err, &r) || r.Code != code {
		t.Fatalf("err = %v, want RuleError %s", err, code)
	}
	if kind, ok := store.RuleCodes()[code]; !ok || r.Kind != kind {
		t.Fatalf("RuleError %s: kind %q, store.RuleCodes lists %q (listed: %v)", code, r.Kind, kind, ok)
	}
	return r
}

func wantInvalid(t *testing.T, err error, field string) {
	t.Helper()
	var v *store.ValidationError
	if !errors.As(err, &v) || v.Problems[field] == "" {
		t.Fatalf("err = %v, want ValidationError on %s", err, field)
	}
}

func TestQueue(t *testing.T) {
	a := newAcme(t)
	ada, bob := a.user("1002", "Ada Lovelace"), a.user("1003", "Bob Byte")

	t.Run("OK", func(t *testing.T) {
		q := a.queue("Demo 1", "600", ada.ID)
		if got, want := q.Members, []string{ada.ID}; !slices.Equal(got, want) {
			t.Fatalf("members = %v, want %v", got, want)
		}
		if kind, id, err := a.db.ExtensionOwner(a.id, "600"); err != nil || kind != "queue" || id != q.ID {
			t.Fatalf("ExtensionOwner(600) = %s, %s, %v", kind, id, err)
		}
		q, err := a.db.AddQueueMember(a.id, q.ID, bob.ID, ops)
		a.ok(err)
		q, err = a.db.AddQueueMember(a.id, q.ID, bob.ID, ops) // twice is a no-op
		a.ok(err)
		if got, want := q.Members, []string{ada.ID, bob.ID}; !slices.Equal(got, want) {
			t.Fatalf("members = %v, want %v", got, want)
		}
		if got, want := a.blockers(ada.ID), []string{"enabled", "queue:" + q.ID}; !slices.Equal(got, want) {
			t.Fatalf("blockers = %v, want %v", got, want)
		}
		bs, _ := a.db.DeletionCheck(a.id, ada.ID)
		if got, want := bs[1].Name, "Demo 1"; got != want {
			t.Errorf("queue blocker name = %q, want %q", got, want)
		}
		q, err = a.db.RemoveQueueMember(a.id, q.ID, ada.ID, ops)
		a.ok(err)
		if got, want := q.Members, []string{bob.ID}; !slices.Equal(got, want) {
			t.Fatalf("members = %v, want %v", got, want)
		}
		if _, err := a.db.RemoveQueueMember(a.id, q.ID, ada.ID, ops); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("second remove = %v, want ErrNotFound", err)
		}
		name, ext, members := "Support", "601", []string{ada.ID}
		q, err = a.db.UpdateQueue(a.id, q.ID, store.QueuePatch{Name: &name, Extension: &ext, Members: &members}, ops)
		a.ok(err)
		if q.Name != "Support" || q.Extension != "601" || !slices.Equal(q.Members, members) {
			t.Fatalf("updated queue = %+v", q)
		}
		if _, _, err := a.db.ExtensionOwner(a.id, "600"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("old extension still held: %v", err)
		}
		a.ok(a.db.DeleteQueue(a.id, q.ID, ops))
		if _, err := a.db.Queue(a.id, q.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Queue after delete = %v", err)
		}
		if _, _, err := a.db.ExtensionOwner(a.id, "601"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("extension not released: %v", err)
		}
	})

	t.Run("ErrUnknownMember", func(t *testing.T) {
		_, err := a.db.CreateQueue(a.id, store.NewQueue{Name: "X", Extension: "610", Members: []string{"u-nobody"}}, ops)
		wantInvalid(t, err, "members")
		q := a.queue("Y", "611")
		_, err = a.db.AddQueueMember(a.id, q.ID, "u-nobody", ops)
		wantInvalid(t, err, "user_id")
	})

	t.Run("ErrExtensionTaken", func(t *testing.T) {
		_, err := a.db.CreateQueue(a.id, store.NewQueue{Name: "Clash", Extension: "1002"}, ops)
		wantInvalid(t, err, "extension")
		a.group(store.GroupRing, "G", "620")
		_, err = a.db.CreateQueue(a.id, store.NewQueue{Name: "Clash", Extension: "620"}, ops)
		wantInvalid(t, err, "extension")
		_, err = a.db.CreateUser(a.id, store.NewUser{Extension: "611", Name: "Clash"}, ops)
		wantInvalid(t, err, "extension")
	})

	t.Run("ErrInUseByCallflow", func(t *testing.T) {
		q := a.queue("Sales", "630", bob.ID)
		cf := a.callflow("Sales line", store.Step{Type: store.StepQueue, QueueID: q.ID})
		r := wantRule(t, a.db.DeleteQueue(a.id, q.ID, ops), "queue_in_use")
		if got := r.Detail["callflows"].([]string); !slices.Equal(got, []string{cf.ID}) {
			t.Fatalf("detail = %v", got)
		}
	})

	t.Run("List", func(t *testing.T) {
		qs, err := a.db.Queues(a.id)
		a.ok(err)
		var exts []string
		for _, q := range qs {
			exts = append(exts, q.Extension)
		}
		if !slices.IsSorted(exts) || len(exts) != 2 {
			t.Fatalf("queues by extension = %v", exts)
		}
	})
}

func TestQueueMembershipSurvivesRestart(t *testing.T) {
	a := newAcme(t)
	ada := a.user("1002", "Ada Lovelace")
	q := a.queue("Demo 1", "600", ada.ID)
	a.clock.Advance(time.Hour)
	a.reopen()
	got, err := a.db.Queue(a.id, q.ID)
	a.ok(err)
	if !slices.Equal(got.Members, []string{ada.ID}) || !strings.Contains(got.Label(), "Demo 1") {
		t.Fatalf("queue after reopen = %+v", got)
	}
	if got, want := a.audits("queue.create", "ok"), 1; got != want {
		t.Fatalf("queue.create audits = %d, want %d", got, want)
	}
}

// TestReferenceRaceWithDelete: a delete and writes that name the same user
// race; whatever the order, nothing ends up naming a user who is gone (every
// write checks the users it names inside its own transaction).
func TestReferenceRaceWithDelete(t *testing.T) {
	a := newAcme(t)
	for i := range 10 {
		u := a.user(fmt.Sprint(2000+i), "Temp")
		_, err := a.db.DisableUser(a.id, u.ID, ops)
		a.ok(err)
		q := a.queue(fmt.Sprintf("Q%d", i), fmt.Sprint(600+i))
		g := a.group(store.GroupRing, fmt.Sprintf("G%d", i), fmt.Sprint(700+i))
		var wg sync.WaitGroup
		wg.Add(4)
		go func() { defer wg.Done(); _ = a.db.DeleteUser(a.id, u.ID, ops) }()
		go func() { defer wg.Done(); _, _ = a.db.AddQueueMember(a.id, q.ID, u.ID, ops) }()
		go func() { defer wg.Done(); _, _ = a.db.AddGroupMember(a.id, g.ID, u.ID, ops) }()
		go func() {
			defer wg.Done()
			_, _ = a.db.CreateCallflow(a.id, store.CallflowSpec{Name: "Race", Steps: []store.Step{ring(u.ID)}}, ops)
		}()
		wg.Wait()
		if _, err := a.db.User(a.id, u.ID); err == nil {
			continue // the delete lost: it was refused, fine
		}
		q, _ = a.db.Queue(a.id, q.ID)
		g, _ = a.db.Group(a.id, g.ID)
		cfs, _ := a.db.Callflows(a.id)
		if slices.Contains(q.Members, u.ID) || slices.Contains(g.Members, u.ID) || slices.ContainsFunc(cfs, func(c store.Callflow) bool { return c.Names(u.ID) }) {
			t.Fatalf("round %d: a deleted user is still referenced", i)
		}
	}
}
