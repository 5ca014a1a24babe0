package store_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
	"github.com/google/go-cmp/cmp"
)

// office is an account with everything an offboarding has to untangle for
// Ada: queue and group memberships, a direct line with a number, a shared
// callflow in two versions (the ACTIVE v2 and the AVAILABLE v1 both ring her),
// an unused draft that rings her, a licence and a live registration.
type office struct {
	*acme
	ada, sam, bob                                   store.User
	demo                                            store.Queue
	paging, ringG                                   store.Group
	direct, samLine, salesV1, salesV2, draft, other store.Callflow
	lic                                             store.Licence
}

func newOffice(t *testing.T) *office {
	t.Helper()
	o := &office{acme: newAcme(t)}
	o.sam = o.user("1001", "Sam Supervisor")
	o.ada = o.user("1002", "Ada Lovelace")
	o.bob = o.user("1003", "Bob Byte")
	o.demo = o.queue("Demo 1", "600", o.ada.ID, o.bob.ID)
	o.paging = o.group(store.GroupPaging, "All phones", "700", o.ada.ID, o.bob.ID)
	o.ringG = o.group(store.GroupRing, "Sales ring", "701", o.ada.ID)
	o.direct = o.callflow("Ada direct", ring(o.ada.ID))
	o.samLine = o.callflow("Sam direct", ring(o.sam.ID))
	o.salesV1 = o.callflow("Sales line", ring(o.ada.ID, o.bob.ID), store.Step{Type: "queue", QueueID: o.demo.ID})
	o.draft = o.callflow("Draft", ring(o.ada.ID, o.sam.ID))
	o.other = o.callflow("Warehouse", store.Step{Type: "group", GroupID: o.ringG.ID})
	o.number("+442079460000", o.direct.ID)
	o.number("+442079460001", o.salesV1.ID)
	o.number("+442079460002", o.other.ID)
	var err error
	o.salesV2, err = o.db.NewCallflowVersion(o.id, o.salesV1.ID, store.CallflowSpec{Name: "Sales line",
		Steps: []store.Step{ring(o.ada.ID), ring(o.bob.ID), {Type: "queue", QueueID: o.demo.ID}}}, ops)
	o.ok(err)
	o.lic = o.licence(o.ada.ID)
	o.register(o.ada, "sip:1002@192.0.2.7:5062")
	return o
}

// checkOffboarded verifies the end state of an offboarding of Ada with
// callflow_to Sam's line and release_licence.
func (o *office) checkOffboarded(t *testing.T) {
	t.Helper()
	if _, err := o.db.User(o.id, o.ada.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("User(ada) = %v, want ErrNotFound", err)
	}
	q, err := o.db.Queue(o.id, o.demo.ID)
	o.ok(err)
	if !slices.Equal(q.Members, []string{o.bob.ID}) {
		t.Errorf("queue members = %v", q.Members)
	}
	gs, err := o.db.Groups(o.id)
	o.ok(err)
	for _, g := range gs {
		if slices.Contains(g.Members, o.ada.ID) {
			t.Errorf("group %s still has ada", g.Name)
		}
	}
	cfs, err := o.db.Callflows(o.id)
	o.ok(err)
	var got []string
	for _, cf := range cfs {
		if cf.Names(o.ada.ID) {
			t.Errorf("callflow %s still rings ada", cf.Label())
		}
		got = append(got, cf.Label()+" "+cf.Status+" "+strings.Join(cf.Numbers, ","))
	}
	want := []string{
		"Draft v2 AVAILABLE ", // the lineage's head kept, without ada
		"Sales line v3 ACTIVE +442079460001",
		"Sam direct v1 ACTIVE +442079460000",
		"Warehouse v1 ACTIVE +442079460002",
	}
	if !slices.Equal(got, want) {
		t.Errorf("callflows =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, cf := range cfs {
		if cf.Name == "Sales line" {
			if len(cf.Steps) != 2 || !slices.Equal(cf.Steps[0].UserIDs, []string{o.bob.ID}) || cf.Steps[1].Type != "queue" {
				t.Errorf("Sales line v3 steps = %+v (the ring step left empty must be dropped)", cf.Steps)
			}
		}
	}
	seats, err := o.db.Seats(o.id)
	o.ok(err)
	if seats.Total != 1 || seats.Free != 1 {
		t.Errorf("seats = %+v", seats)
	}
	n, err := o.db.Number(o.id, "+442079460000")
	o.ok(err)
	if l := len(n.History); l != 2 || n.History[0].CallflowName != "Ada direct" || n.History[1].CallflowName != "Sam direct" {
		t.Errorf("direct-line history = %+v", n.History)
	}
	// Every step is audited exactly once, whatever happened in between.
	for _, step := range store.OffboardStepNames() {
		if got := o.audits("offboard."+step, "ok"); got != 1 {
			t.Errorf("audit offboard.%s = %d entries, want 1", step, got)
		}
	}
	for action, want := range map[string]int{"user.disable": 1, "user.delete": 1, "registrations.sign_out": 1, "licence.release": 1} {
		if got := o.audits(action, ""); got != want {
			t.Errorf("audit %s = %d, want %d", action, got, want)
		}
	}
}

func TestOffboard(t *testing.T) {
	o := newOffice(t)
	if got, want := o.blockers(o.ada.ID), []string{"enabled", "registration", "queue:" + o.demo.ID,
		"callflow:" + o.direct.ID, "callflow:" + o.draft.ID, "callflow:" + o.salesV2.ID, "callflow:" + o.salesV1.ID,
		"licence:" + o.lic.ID}; !slices.Equal(got, want) {
		t.Fatalf("blockers = %v\nwant %v", got, want)
	}
	_, err := o.db.CreateDevice(o.id, store.NewDevice{MAC: "805ec0aabbcc", Model: "T46S", Lines: []store.DeviceLine{{Line: 1, UserID: o.ada.ID}}}, ops)
	o.ok(err)
	j, err := o.db.StartOffboard(o.id, o.ada.ID, store.OffboardOptions{CallflowTo: o.samLine.ID, ReleaseLicence: true}, ops)
	o.ok(err)
	if j.State != store.JobRunning || len(j.Steps) != len(store.OffboardStepNames()) || j.UserLabel != "1002 Ada Lovelace" {
		t.Fatalf("started job = %+v", j)
	}
	for _, s := range j.Steps {
		if s.State != store.JobStepPending {
			t.Fatalf("step %s = %s, want pending", s.Name, s.State)
		}
	}
	_, err = o.db.StartOffboard(o.id, o.ada.ID, store.OffboardOptions{}, ops)
	wantRule(t, err, "offboard_in_progress")

	j, err = o.db.ResumeOffboard(o.id, j.ID, ops)
	o.ok(err)
	if j.State != store.JobDone {
		t.Fatalf("job = %+v", j)
	}
	for _, s := range j.Steps {
		if s.State != store.JobStepDone {
			t.Errorf("step %s = %s (%s)", s.Name, s.State, s.Detail)
		}
	}
	// The caller check-syncs these: the handset with her line, and the phone that was registered.
	if got := j.Steps[1].MACs; !slices.Equal(got, []string{"805ec0aabbcc", "001565aabbcc"}) {
		t.Errorf("sign_out MACs = %v", got)
	}
	if got := j.Steps[7].MACs; !slices.Equal(got, []string{"805ec0aabbcc"}) {
		t.Errorf("delete MACs = %v", got)
	}
	if d, err := o.db.Device(o.id, "805ec0aabbcc"); err != nil || len(d.Lines) != 0 {
		t.Errorf("device after offboarding = %+v, %v; want its line cleared", d, err)
	}
	o.checkOffboarded(t)
	jobs, err := o.db.Jobs(o.id)
	o.ok(err)
	if len(jobs) != 1 || jobs[0].ID != j.ID || jobs[0].State != store.JobDone {
		t.Fatalf("Jobs = %+v", jobs)
	}
}

// TestOffboardInterrupted stops the job after each step in turn, closes and
// reopens the store (a crash between two transactions), and resumes: the job
// completes with nothing lost and no step done twice.
func TestOffboardInterrupted(t *testing.T) {
	for cut := 0; cut <= len(store.OffboardStepNames()); cut++ {
		t.Run(strings.Join(store.OffboardStepNames()[:cut], ","), func(t *testing.T) {
			o := newOffice(t)
			j, err := o.db.StartOffboard(o.id, o.ada.ID, store.OffboardOptions{CallflowTo: o.samLine.ID, ReleaseLicence: true}, ops)
			o.ok(err)
			for i := 0; i < cut; i++ {
				o.reopen()
				j, err = o.db.RunOffboardStep(o.id, j.ID, ops)
				o.ok(err)
				if j.Steps[i].State != store.JobStepDone {
					t.Fatalf("step %s = %s (%s)", j.Steps[i].Name, j.Steps[i].State, j.Steps[i].Detail)
				}
			}
			o.reopen()
			running, err := o.db.RunningJobs()
			o.ok(err)
			if cut < len(store.OffboardStepNames()) && (len(running) != 1 || running[0].ID != j.ID) {
				t.Fatalf("RunningJobs after restart = %+v", running)
			}
			j, err = o.db.ResumeOffboard(o.id, j.ID, ops)
			o.ok(err)
			if j.State != store.JobDone {
				t.Fatalf("job after resume = %+v", j)
			}
			// Resuming a done job changes nothing.
			again, err := o.db.ResumeOffboard(o.id, j.ID, ops)
			o.ok(err)
			if again.State != store.JobDone || !again.UpdatedAt.Equal(j.UpdatedAt) {
				t.Fatalf("resume of a done job changed it: %+v", again)
			}
			o.checkOffboarded(t)
		})
	}
}

func TestOffboardWaits(t *testing.T) {
	o := newOffice(t)
	op := "1002"
	_, err := o.db.UpdateAccount(o.id, store.AccountPatch{OperatorExtension: &op}, ops)
	o.ok(err)
	j, err := o.db.StartOffboard(o.id, o.ada.ID, store.OffboardOptions{}, ops) // no takeover, keep the licence
	o.ok(err)

	// The operator extension is a blocker the job cannot clear by itself.
	j, err = o.db.ResumeOffboard(o.id, j.ID, ops)
	o.ok(err)
	if j.State != store.JobWaiting || j.Steps[0].State != store.JobStepWaiting || !strings.Contains(j.Steps[0].Detail, "operator") {
		t.Fatalf("job = %+v", j)
	}
	if u, _ := o.db.User(o.id, o.ada.ID); u.Status != store.StatusEnabled {
		t.Fatalf("user status = %s: a waiting step must change nothing", u.Status)
	}
	if got := o.audits("offboard.disable", "waiting"); got != 1 {
		t.Fatalf("waiting audit = %d", got)
	}
	op = "1001"
	_, err = o.db.UpdateAccount(o.id, store.AccountPatch{OperatorExtension: &op}, ops)
	o.ok(err)

	// Run to the licence step, then let a registration come back.
	for j.Steps[6].State == store.JobStepPending {
		if j.State == store.JobWaiting {
			j, err = o.db.ResumeOffboard(o.id, j.ID, ops)
			o.ok(err)
			break
		}
		j, err = o.db.RunOffboardStep(o.id, j.ID, ops)
		o.ok(err)
	}
	// ResumeOffboard ran on to the delete step, which waits for the kept licence.
	if j.State != store.JobWaiting || j.Steps[6].State != store.JobStepSkipped || j.Steps[7].State != store.JobStepWaiting ||
		!strings.Contains(j.Steps[7].Detail, "licence held") {
		t.Fatalf("job = %+v", j)
	}
	if len(j.Steps[7].Blockers) != 1 || j.Steps[7].Blockers[0].Kind != "licence" {
		t.Fatalf("delete blockers = %+v", j.Steps[7].Blockers)
	}
	// Without callflow_to, the direct line's number was deactivated.
	if n, _ := o.db.Number(o.id, "+442079460000"); n.Status != store.NumberAvailable {
		t.Fatalf("direct line = %+v", n)
	}

	// Someone re-enables her and a phone registers again.
	_, err = o.db.EnableUser(o.id, o.ada.ID, ops)
	o.ok(err)
	o.register(o.ada, "sip:1002@192.0.2.8:5062")
	_, err = o.db.AssignLicence(o.id, o.lic.ID, o.bob.ID, ops)
	o.ok(err)
	j, err = o.db.ResumeOffboard(o.id, j.ID, ops)
	o.ok(err)
	if j.State != store.JobWaiting || !strings.Contains(j.Steps[7].Detail, "enabled") || !strings.Contains(j.Steps[7].Detail, "registration") {
		t.Fatalf("job = %+v", j.Steps[7])
	}
	// Clear them by hand; resuming finishes the job.
	_, err = o.db.DisableUser(o.id, o.ada.ID, ops)
	o.ok(err)
	_, err = o.db.SignOut(o.id, o.ada.ID, ops)
	o.ok(err)
	j, err = o.db.ResumeOffboard(o.id, j.ID, ops)
	o.ok(err)
	if j.State != store.JobDone {
		t.Fatalf("job = %+v", j)
	}
	if got := o.audits("offboard.delete", "waiting"); got != 2 {
		t.Errorf("waiting delete audits = %d, want 2", got)
	}
	for _, step := range store.OffboardStepNames() {
		if got := o.audits("offboard."+step, "ok"); got != 1 {
			t.Errorf("audit offboard.%s ok = %d, want 1", step, got)
		}
	}
	if lic, _ := o.db.Licence(o.id, o.lic.ID); lic.UserID != o.bob.ID {
		t.Errorf("licence holder = %q", lic.UserID)
	}
}

func TestStartOffboardValidation(t *testing.T) {
	o := newOffice(t)
	_, err := o.db.StartOffboard(o.id, o.ada.ID, store.OffboardOptions{CallflowTo: o.salesV2.ID}, ops)
	wantInvalid(t, err, "callflow_to")
	_, err = o.db.StartOffboard(o.id, o.ada.ID, store.OffboardOptions{CallflowTo: "cf-nothing"}, ops)
	wantInvalid(t, err, "callflow_to")
	if _, err := o.db.StartOffboard(o.id, "u-nobody", store.OffboardOptions{}, ops); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("StartOffboard(unknown) = %v", err)
	}
	if _, err := o.db.Job(o.id, "job-nothing"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Job(unknown) = %v", err)
	}
}

// dumpAccount renders everything of an account that a deletion could touch.
func dumpAccount(t *testing.T, db *store.DB, acct string) string {
	t.Helper()
	var parts []any
	add := func(v any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, v)
	}
	add(db.Account(acct))
	add(db.Users(acct))
	add(db.AccountBindings(acct))
	add(db.Queues(acct))
	add(db.Groups(acct))
	add(db.Callflows(acct))
	add(db.Numbers(acct, ""))
	add(db.Licences(acct))
	add(db.Seats(acct))
	add(db.Jobs(acct))
	add(db.Audit(acct, 3, 0)) // any entry a delete wrote would be among the newest
	b, err := json.Marshal(parts)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDeletionCheckAgreesWithDelete builds random accounts (users, queues,
// groups, callflow versions, numbers, licences, live and expired bindings, an
// operator) and tries to delete every user, clearing some blockers between
// rounds. DeletionCheck and DeleteUser must agree exactly; the blockers must
// match what the data says; a refused delete must change nothing.
func TestDeletionCheckAgreesWithDelete(t *testing.T) {
	clock := storetest.NewClock()
	db := storetest.Open(t, clock)
	store.NoSyncForTest(db) // thousands of commits; durability is tested elsewhere
	seeds := 16
	if testing.Short() {
		seeds = 6
	}
	if storetest.Backend() == "etcd" {
		seeds = 3 // thousands of writes, each a few etcd round trips
	}
	deleted, refused := 0, 0
	for seed := range seeds {
		acct := fmt.Sprintf("p%d", seed)
		r := rand.New(rand.NewPCG(uint64(seed), 2026))
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
		}
		_, err := db.CreateAccount(acct, acct+".test", ops)
		must(err)
		subset := func(ids []string, min int) []string {
			var out []string
			for _, i := range r.Perm(len(ids)) {
				if r.IntN(2) == 0 {
					out = append(out, ids[i])
				}
			}
			for len(out) < min {
				out = append(out, ids[r.IntN(len(ids))])
				slices.Sort(out)
				out = slices.Compact(out)
			}
			return out
		}

		var users []string
		for i := range 3 + r.IntN(5) {
			u, err := db.CreateUser(acct, store.NewUser{Extension: fmt.Sprint(1000 + i), Name: fmt.Sprintf("User %d", i)}, ops)
			must(err)
			users = append(users, u.ID)
		}
		var queues, groups []string
		for i := range r.IntN(3) {
			q, err := db.CreateQueue(acct, store.NewQueue{Name: fmt.Sprintf("Q%d", i), Extension: fmt.Sprint(600 + i), Members: subset(users, 0)}, ops)
			must(err)
			queues = append(queues, q.ID)
		}
		for i := range r.IntN(3) {
			kind := []string{store.GroupPaging, store.GroupRing}[r.IntN(2)]
			g, err := db.CreateGroup(acct, store.NewGroup{Kind: kind, Name: fmt.Sprintf("G%d", i), Extension: fmt.Sprint(700 + i), Members: subset(users, 0)}, ops)
			must(err)
			groups = append(groups, g.ID)
			if r.IntN(3) == 0 {
				_, err = db.DisableGroup(acct, g.ID, ops)
				must(err)
			}
		}
		randomSpec := func(name string) store.CallflowSpec {
			spec := store.CallflowSpec{Name: name}
			for range 1 + r.IntN(3) {
				switch n := r.IntN(4); {
				case n == 0 && len(queues) > 0:
					spec.Steps = append(spec.Steps, store.Step{Type: "queue", QueueID: queues[r.IntN(len(queues))]})
				case n == 1 && len(groups) > 0:
					spec.Steps = append(spec.Steps, store.Step{Type: "group", GroupID: groups[r.IntN(len(groups))]})
				default:
					spec.Steps = append(spec.Steps, ring(subset(users, 1)...))
				}
			}
			return spec
		}
		var callflows []string
		for i := range r.IntN(5) {
			cf, err := db.CreateCallflow(acct, randomSpec(fmt.Sprintf("CF%d", i)), ops)
			must(err)
			callflows = append(callflows, cf.ID)
		}
		for i := range r.IntN(5) {
			e := fmt.Sprintf("+4420794%02d%03d", seed, i)
			_, err := db.AddNumber(acct, e, ops)
			must(err)
			if len(callflows) > 0 && r.IntN(3) > 0 {
				_, err = db.ActivateNumber(acct, e, callflows[r.IntN(len(callflows))], ops)
				must(err)
			}
		}
		for range r.IntN(3) { // edits: new versions that take the numbers
			if len(callflows) == 0 {
				break
			}
			old := callflows[r.IntN(len(callflows))]
			cf, err := db.NewCallflowVersion(acct, old, randomSpec("edited"), ops)
			must(err)
			callflows = append(callflows, cf.ID)
		}
		holders := subset(users, 0)
		for i := range r.IntN(4) {
			l, err := db.CreateLicence(acct, "cloud-phone", ops)
			must(err)
			if i < len(holders) {
				_, err = db.AssignLicence(acct, l.ID, holders[i], ops)
				must(err)
			}
		}
		for i, uid := range subset(users, 0) {
			_, err := db.Register(store.RegisterRequest{AccountID: acct, UserID: uid, CallID: fmt.Sprintf("c%d", i), CSeq: 1,
				Source: "192.0.2.7:5062", Transport: "udp", UserAgent: "softphone",
				Contacts: []store.ContactUpdate{{URI: fmt.Sprintf("sip:%d@192.0.2.7:%d", i, 5000+i), Expires: 60 + r.IntN(540)}}})
			must(err)
		}
		if r.IntN(2) == 0 {
			op := "1000"
			_, err = db.UpdateAccount(acct, store.AccountPatch{OperatorExtension: &op}, ops)
			must(err)
		}
		for _, uid := range subset(users, 0) {
			if _, err := db.DisableUser(acct, uid, ops); err != nil {
				wantRule(t, err, "operator_extension")
			}
		}
		clock.Advance(time.Duration(r.IntN(400)) * time.Second) // some bindings expire

		for round := range 6 {
			for _, i := range r.Perm(len(users)) {
				uid := users[i]
				u, err := db.User(acct, uid)
				if errors.Is(err, store.ErrNotFound) {
					continue
				}
				must(err)
				checkBlockersMatchData(t, db, acct, u)
				before := dumpAccount(t, db, acct)
				bs, err := db.DeletionCheck(acct, uid)
				must(err)
				err = db.DeleteUser(acct, uid, ops)
				if len(bs) == 0 {
					if err != nil {
						t.Fatalf("seed %d round %d: DeletionCheck found no blocker but DeleteUser = %v", seed, round, err)
					}
					deleted++
					checkGone(t, db, acct, uid)
					continue
				}
				var inUse *store.InUseError
				if !errors.As(err, &inUse) {
					t.Fatalf("seed %d: DeletionCheck = %d blockers but DeleteUser = %v", seed, len(bs), err)
				}
				if diff := cmp.Diff(bs, inUse.Blockers); diff != "" {
					t.Fatalf("seed %d: DeletionCheck and DeleteUser disagree (-check +delete):\n%s", seed, diff)
				}
				if after := dumpAccount(t, db, acct); after != before {
					t.Fatalf("seed %d: a refused DeleteUser changed the store:\n%s", seed, cmp.Diff(before, after))
				}
				refused++
			}
			storetest.MustCheck(t, db) // no deletion left a dangling reference
			// Clear some blockers the way an admin would, then try again.
			for _, uid := range users {
				clearSomeBlockers(t, db, acct, uid, r)
			}
		}
	}
	if deleted == 0 || refused == 0 {
		t.Fatalf("the random accounts exercised too little: %d deleted, %d refused", deleted, refused)
	}
	t.Logf("%d users deleted, %d deletions refused", deleted, refused)
}

// checkBlockersMatchData counts each blocker kind from the data itself.
func checkBlockersMatchData(t *testing.T, db *store.DB, acct string, u store.User) {
	t.Helper()
	want := map[string]int{}
	if u.Status == store.StatusEnabled {
		want["enabled"] = 1
	}
	bds, _ := db.Bindings(acct, u.ID)
	want["registration"] = len(bds)
	qs, _ := db.Queues(acct)
	for _, q := range qs {
		if slices.Contains(q.Members, u.ID) {
			want["queue"]++
		}
	}
	cfs, _ := db.Callflows(acct)
	for _, cf := range cfs {
		if cf.Names(u.ID) {
			want["callflow"]++
		}
	}
	ls, _ := db.Licences(acct)
	for _, l := range ls {
		if l.UserID == u.ID {
			want["licence"]++
		}
	}
	if a, _ := db.Account(acct); a.OperatorExtension == u.Extension {
		want["operator"] = 1
	}
	bs, err := db.DeletionCheck(acct, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	var order []string
	for _, b := range bs {
		got[b.Kind]++
		if len(order) == 0 || order[len(order)-1] != b.Kind {
			order = append(order, b.Kind)
		}
	}
	for k, n := range want {
		if got[k] != n {
			t.Fatalf("user %s: %d %s blockers, the data says %d (%+v)", u.Extension, got[k], k, n, bs)
		}
	}
	rank := map[string]int{"enabled": 0, "registration": 1, "queue": 2, "callflow": 3, "licence": 4, "operator": 5}
	for i := 1; i < len(order); i++ {
		if rank[order[i-1]] >= rank[order[i]] {
			t.Fatalf("blocker order %v is not docs/account-model.md's", order)
		}
	}
}

func checkGone(t *testing.T, db *store.DB, acct, uid string) {
	t.Helper()
	if _, err := db.User(acct, uid); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted user still there: %v", err)
	}
	gs, _ := db.Groups(acct)
	for _, g := range gs {
		if slices.Contains(g.Members, uid) {
			t.Fatalf("deleted user still in group %s", g.Name)
		}
	}
}

// clearSomeBlockers removes some of what stops uid's deletion, as an admin would.
func clearSomeBlockers(t *testing.T, db *store.DB, acct, uid string, r *rand.Rand) {
	t.Helper()
	if _, err := db.User(acct, uid); err != nil {
		return
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	switch r.IntN(5) {
	case 0:
		if _, err := db.DisableUser(acct, uid, ops); err != nil {
			wantRule(t, err, "operator_extension")
		}
	case 1:
		_, err := db.SignOut(acct, uid, ops)
		must(err)
	case 2:
		qs, _ := db.Queues(acct)
		for _, q := range qs {
			if slices.Contains(q.Members, uid) {
				_, err := db.RemoveQueueMember(acct, q.ID, uid, ops)
				must(err)
			}
		}
	case 3:
		ls, _ := db.Licences(acct)
		for _, l := range ls {
			if l.UserID == uid {
				_, err := db.ReleaseLicence(acct, l.ID, ops)
				must(err)
			}
		}
	case 4:
		cfs, _ := db.Callflows(acct)
		for _, cf := range cfs {
			if !cf.Names(uid) {
				continue
			}
			for _, e := range cf.Numbers {
				_, err := db.DeactivateNumber(acct, e, ops)
				must(err)
			}
			must(db.DeleteCallflow(acct, cf.ID, ops))
		}
	}
}

// TestOffboardConcurrentResume runs the same job from two goroutines at once
// (two admins pressing "resume"): every step still runs exactly once.
func TestOffboardConcurrentResume(t *testing.T) {
	o := newOffice(t)
	j, err := o.db.StartOffboard(o.id, o.ada.ID, store.OffboardOptions{CallflowTo: o.samLine.ID, ReleaseLicence: true}, ops)
	o.ok(err)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := o.db.ResumeOffboard(o.id, j.ID, ops)
			errs <- err
		}()
	}
	for range 2 {
		o.ok(<-errs)
	}
	j, err = o.db.Job(o.id, j.ID)
	o.ok(err)
	if j.State != store.JobDone {
		t.Fatalf("job = %+v", j)
	}
	o.checkOffboarded(t)
}

// TestOffboardUserDeletedByHand: an admin finishes the job's work by hand and
// deletes the user while the job waits; resuming completes it without error.
func TestOffboardUserDeletedByHand(t *testing.T) {
	o := newOffice(t)
	j, err := o.db.StartOffboard(o.id, o.ada.ID, store.OffboardOptions{}, ops)
	o.ok(err)
	j, err = o.db.ResumeOffboard(o.id, j.ID, ops)
	o.ok(err)
	if j.State != store.JobWaiting || j.Steps[7].State != store.JobStepWaiting {
		t.Fatalf("job = %+v", j)
	}
	_, err = o.db.AssignLicence(o.id, o.lic.ID, o.bob.ID, ops)
	o.ok(err)
	o.ok(o.db.DeleteUser(o.id, o.ada.ID, ops))
	j, err = o.db.ResumeOffboard(o.id, j.ID, ops)
	o.ok(err)
	if j.State != store.JobDone || !strings.Contains(j.Steps[7].Detail, "already deleted") {
		t.Fatalf("job = %+v", j.Steps[7])
	}
	if got := o.audits("user.delete", ""); got != 1 {
		t.Fatalf("user.delete audits = %d", got)
	}
}
