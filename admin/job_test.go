package admin

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dialtone-voip/dialtone/store"
)

// waitJob polls GET /jobs/{id} until ok(job) holds: the job runs in a
// goroutine of the server.
func (e *env) waitJob(id string, ok func(jobJSON) bool) jobJSON {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var j jobJSON
		e.call("GET", base+"/jobs/"+id, providerSecret, nil, 200, &j)
		if ok(j) {
			return j
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %s stuck: %+v", id, j)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitCheckSyncs waits until the fake notifier has seen every MAC, woken by
// each check-sync it receives.
func (e *env) waitCheckSyncs(macs ...string) {
	e.t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		calls, changed := e.notifier.callsAndChange()
		missing := slices.DeleteFunc(slices.Clone(macs), func(m string) bool { return slices.Contains(calls, "default/"+m) })
		if len(missing) == 0 {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			e.t.Fatalf("no check-sync to %v; sent %v", missing, calls)
		}
	}
}

func stepStates(j jobJSON) []string {
	var out []string
	for _, s := range j.Steps {
		out = append(out, s.Name+" "+s.State)
	}
	return out
}

func state(want string) func(jobJSON) bool { return func(j jobJSON) bool { return j.State == want } }

// fullUser is a user with everything the two articles mention: a licence, a
// queue, a paging group, a direct line with a number, a shared callflow with
// a number (and an older version naming them), two Yealink phones and a live
// registration from one of them.
type fullUser struct {
	user, grace         userJSON
	licence             string
	queue, group        string
	direct, sales, team callflowJSON
}

func (e *env) fullUser(admin string) fullUser {
	e.t.Helper()
	var f fullUser
	f.user = e.createUser("1002", "Ada Lovelace")
	f.grace = e.createUser("1003", "Grace Hopper")
	ada, grace := f.user.ID, f.grace.ID
	var lic licenceJSON
	e.call("POST", base+"/licences", providerSecret, nil, 201, &lic)
	e.call("POST", base+"/licences/"+lic.ID+"/assign", admin, map[string]string{"user_id": ada}, 200, nil)
	f.licence = lic.ID
	var q queueJSON
	e.call("POST", base+"/queues", admin, map[string]any{"name": "Demo 1", "extension": "600", "members": []string{ada, grace}}, 201, &q)
	f.queue = q.ID
	var g groupJSON
	e.call("POST", base+"/groups", admin, map[string]any{"kind": "paging", "name": "Warehouse", "extension": "700", "members": []string{ada, grace}}, 201, &g)
	f.group = g.ID
	e.call("POST", base+"/callflows", admin, flow("Ada direct", ring(0, ada)), 201, &f.direct)
	var v1 callflowJSON
	e.call("POST", base+"/callflows", admin, flow("Sales line", ring(20, ada, grace)), 201, &v1)
	e.call("PUT", base+"/callflows/"+v1.ID, admin, flow("Sales line", ring(30, ada, grace), map[string]any{"type": "queue", "queue_id": q.ID}), 201, &f.sales)
	e.call("POST", base+"/callflows", admin, flow("Team line", ring(0, grace)), 201, &f.team)
	for num, cf := range map[string]string{"+442079460000": f.direct.ID, "+442079460001": f.sales.ID} {
		e.call("POST", base+"/numbers", providerSecret, map[string]string{"e164": num}, 201, nil)
		e.call("POST", base+"/numbers/"+num+"/activate", admin, map[string]string{"callflow_id": cf}, 200, nil)
	}
	e.call("POST", base+"/devices", admin, map[string]any{"mac": "001565aabbcc", "model": "T46S", "lines": []map[string]any{{"line": 1, "user_id": ada}}}, 201, nil)
	e.call("POST", base+"/devices", admin, map[string]any{"mac": "805ec0aabbcc", "model": "T54W", "lines": []map[string]any{{"line": 1, "user_id": grace}, {"line": 2, "user_id": ada}}}, 201, nil)
	e.register(ada, "sip:1002@192.0.2.7:5062", yealinkUA)
	return f
}

// TestOffboardingInOneCall: one POST does what both articles take pages
// for, in the background; GET /jobs/{id} shows each step; the audit log has
// every step; the phones are sent check-syncs.
func TestOffboardingInOneCall(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	f := e.fullUser(admin)

	e.callErr("POST", base+"/users/"+f.user.ID+"/offboard", e.token("default", "viewer"), `{}`, 403, "forbidden")
	if er := e.callErr("POST", base+"/users/"+f.user.ID+"/offboard", admin, map[string]any{"callflow_to": f.sales.ID}, 400, "invalid"); er.Error.Field != "callflow_to" {
		t.Errorf("callflow_to that rings the user: field %q", er.Error.Field)
	}
	e.callErr("POST", base+"/users/u-nobody/offboard", admin, `{}`, 404, "not_found")

	var started jobAccepted
	e.call("POST", base+"/users/"+f.user.ID+"/offboard", admin, map[string]any{"callflow_to": f.team.ID, "release_licence": true}, 202, &started)
	if started.JobID == "" {
		t.Fatal("no job_id")
	}
	j := e.waitJob(started.JobID, func(j jobJSON) bool { return j.State != "running" })
	wantSteps := []string{"disable done", "sign_out done", "remove_from_queues done", "remove_from_groups done",
		"callflows done", "numbers done", "licence done", "delete done"}
	if diff := cmp.Diff(wantSteps, stepStates(j)); diff != "" || j.State != "done" {
		t.Fatalf("job %s (-want +got):\n%s\n%+v", j.State, diff, j)
	}
	if j.UserID != f.user.ID || j.UserLabel != "1002 Ada Lovelace" || j.Options.CallflowTo == nil || *j.Options.CallflowTo != f.team.ID || !j.Options.ReleaseLicence {
		t.Errorf("job = %+v", j)
	}
	if macs := j.Steps[1].MACs; !cmp.Equal(macs, []string{"001565aabbcc", "805ec0aabbcc"}) {
		t.Errorf("sign_out macs = %v", macs)
	}
	e.waitCheckSyncs("001565aabbcc", "805ec0aabbcc")

	// The user is gone; everything they held moved on.
	e.callErr("GET", base+"/users/"+f.user.ID, admin, nil, 404, "not_found")
	var n numberJSON
	e.call("GET", base+"/numbers/442079460000", admin, nil, 200, &n)
	if n.Status != "active" || *n.CallflowID != f.team.ID {
		t.Errorf("direct-line number = %+v, want it on the team line", n)
	}
	e.call("GET", base+"/numbers/442079460001", admin, nil, 200, &n)
	var sales callflowJSON
	e.call("GET", base+"/callflows/"+*n.CallflowID, admin, nil, 200, &sales)
	if sales.Name != "Sales line" || sales.Version != 3 || !cmp.Equal(sales.Steps[0].UserIDs, []string{f.grace.ID}) || sales.Steps[0].TimeoutS != 30 {
		t.Errorf("shared number's callflow = %+v", sales)
	}
	var cfs callflowList
	e.call("GET", base+"/callflows", admin, nil, 200, &cfs)
	var names []string
	for _, cf := range cfs.Callflows {
		names = append(names, cf.Name+" v"+strings.Repeat("I", cf.Version))
	}
	if diff := cmp.Diff([]string{"Sales line vIII", "Team line vI"}, names); diff != "" {
		t.Errorf("callflows left (-want +got):\n%s", diff)
	}
	var q queueJSON
	e.call("GET", base+"/queues/"+f.queue, admin, nil, 200, &q)
	var g groupJSON
	e.call("GET", base+"/groups/"+f.group, admin, nil, 200, &g)
	if !cmp.Equal(q.Members, []string{f.grace.ID}) || !cmp.Equal(g.Members, []string{f.grace.ID}) {
		t.Errorf("queue members %v, group members %v", q.Members, g.Members)
	}
	var lic licenceJSON
	e.call("GET", base+"/licences/"+f.licence, admin, nil, 200, &lic)
	var acct accountJSON
	e.call("GET", base, admin, nil, 200, &acct)
	if lic.UserID != nil || acct.Seats != (seatsJSON{Total: 1, Assigned: 0, Free: 1}) {
		t.Errorf("licence %+v, seats %+v: released, the seat kept", lic, acct.Seats)
	}
	var d deviceJSON
	e.call("GET", base+"/devices/805ec0aabbcc", admin, nil, 200, &d)
	if !cmp.Equal(d.Lines, []deviceLineJSON{{Line: 1, UserID: f.grace.ID}}) {
		t.Errorf("shared phone's lines = %+v", d.Lines)
	}

	// The audit log shows each step, done by the admin who asked.
	var steps []string
	for _, en := range e.auditEntries() {
		if strings.HasPrefix(en.Action, "offboard.") {
			steps = append(steps, en.Action+" "+en.Result)
		}
		if en.Action == "licence.release" && en.Actor.Role != "admin" {
			t.Errorf("licence released by %+v, want the admin", en.Actor)
		}
	}
	slices.Reverse(steps)
	wantAudit := []string{"offboard.start ok", "offboard.disable ok", "offboard.sign_out ok", "offboard.remove_from_queues ok", "offboard.remove_from_groups ok",
		"offboard.callflows ok", "offboard.numbers ok", "offboard.licence ok", "offboard.delete ok"}
	if diff := cmp.Diff(wantAudit, steps); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}

	// A finished job has nothing to resume.
	e.callErr("POST", base+"/jobs/"+j.ID+"/resume", admin, nil, 409, "job_done")
	var list jobList
	e.call("GET", base+"/jobs", e.token("default", "viewer"), nil, 200, &list)
	if len(list.Jobs) != 1 || list.Jobs[0].ID != j.ID {
		t.Errorf("jobs = %+v", list)
	}
	e.callErr("GET", base+"/jobs/job-nope", admin, nil, 404, "not_found")
}

// TestOffboardingWaitsThenResumes: the operator extension stops the job at
// the disable step, a kept licence at the delete step; each time the admin
// clears the blocker and resumes, and the job continues from where it stood.
func TestOffboardingWaitsThenResumes(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	f := e.fullUser(admin)
	e.call("PATCH", base, admin, `{"operator_extension": "1002"}`, 200, nil)

	var started jobAccepted
	e.call("POST", base+"/users/"+f.user.ID+"/offboard", admin, `{"release_licence": false}`, 202, &started)
	j := e.waitJob(started.JobID, func(j jobJSON) bool { return j.State != "running" })
	if j.State != "waiting" || j.Steps[0].State != "waiting" || !strings.Contains(j.Steps[0].Detail, "operator") || j.Steps[1].State != "pending" {
		t.Fatalf("job = %+v, want waiting at disable for the operator", j)
	}
	// Nothing was changed, and a second job for the user is refused.
	var u userJSON
	e.call("GET", base+"/users/"+f.user.ID, admin, nil, 200, &u)
	if u.Status != "enabled" {
		t.Errorf("user = %+v", u)
	}
	e.callErr("POST", base+"/users/"+f.user.ID+"/offboard", admin, `{}`, 409, "offboard_in_progress")
	e.callErr("POST", base+"/jobs/"+j.ID+"/resume", e.token("default", "viewer"), nil, 403, "forbidden")

	// Clear the operator, resume: it runs on and waits at delete for the licence.
	e.call("PATCH", base, admin, `{"operator_extension": "1003"}`, 200, nil)
	e.call("POST", base+"/jobs/"+j.ID+"/resume", admin, nil, 202, nil)
	j = e.waitJob(j.ID, func(j jobJSON) bool { return j.State == "waiting" && j.Steps[7].State == "waiting" })
	want := []string{"disable done", "sign_out done", "remove_from_queues done", "remove_from_groups done",
		"callflows done", "numbers done", "licence skipped", "delete waiting"}
	if diff := cmp.Diff(want, stepStates(j)); diff != "" {
		t.Fatalf("steps (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]blockerJSON{{"kind": "licence", "id": f.licence}}, j.Steps[7].Blockers); diff != "" {
		t.Errorf("delete blockers (-want +got):\n%s", diff)
	}
	// Without callflow_to the direct line's number was deactivated.
	var n numberJSON
	e.call("GET", base+"/numbers/442079460000", admin, nil, 200, &n)
	if n.Status != "available" {
		t.Errorf("direct-line number = %+v, want available", n)
	}

	// Reassign the licence, resume: done.
	e.call("POST", base+"/licences/"+f.licence+"/assign", admin, map[string]string{"user_id": f.grace.ID}, 200, nil)
	e.call("POST", base+"/jobs/"+j.ID+"/resume", admin, nil, 202, nil)
	j = e.waitJob(j.ID, state("done"))
	if j.Steps[7].State != "done" || j.Steps[7].Blockers != nil {
		t.Errorf("delete step = %+v", j.Steps[7])
	}
	e.callErr("GET", base+"/users/"+f.user.ID, admin, nil, 404, "not_found")
	e.waitCheckSyncs("001565aabbcc", "805ec0aabbcc")
}

// TestResumeJobs: a job left running (as after a crash) is finished by
// ResumeJobs at start-up, with its check-syncs.
func TestResumeJobs(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	f := e.fullUser(admin)
	j, err := e.db.StartOffboard("default", f.user.ID, store.OffboardOptions{ReleaseLicence: true}, store.Actor{Name: "ops", Role: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.RunOffboardStep("default", j.ID, j.Actor); err != nil { // one step, then the "crash"
		t.Fatal(err)
	}
	n := &fakeNotifier{}
	if err := ResumeJobs(context.Background(), Options{DB: e.db, Notifier: n}); err != nil {
		t.Fatalf("ResumeJobs: %v", err)
	}
	got, err := e.db.Job("default", j.ID)
	if err != nil || got.State != store.JobDone {
		t.Fatalf("job after ResumeJobs = %+v, %v", got, err)
	}
	if diff := cmp.Diff([]string{"default/001565aabbcc", "default/805ec0aabbcc"}, n.Calls()); diff != "" {
		t.Errorf("check-syncs (-want +got):\n%s", diff)
	}
	if err := ResumeJobs(context.Background(), Options{DB: e.db}); err != nil {
		t.Errorf("ResumeJobs with nothing to do: %v", err)
	}
	if err := ResumeJobs(context.Background(), Options{}); err == nil {
		t.Error("ResumeJobs without a DB succeeded")
	}
}
