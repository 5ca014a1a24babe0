package store

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

var bJobs = []byte("jobs") // acct/job → Job

// Job states.
const (
	JobRunning = "running" // the next pending step may run
	JobWaiting = "waiting" // a step is blocked by something only a person can clear; resume retries it
	JobDone    = "done"
	JobFailed  = "failed" // a step hit an error; resume retries it
)

// Job step states.
const (
	JobStepPending = "pending"
	JobStepDone    = "done"
	JobStepWaiting = "waiting"
	JobStepFailed  = "failed"
	JobStepSkipped = "skipped" // the options said not to act (a kept licence)
)

// offboardSteps are the offboarding job's steps, in the order they run.
var offboardSteps = []string{
	"disable",            // disable the user (waits while they are the operator extension)
	"sign_out",           // delete every binding; JobStep.MACs lists the phones to check-sync
	"remove_from_queues", // leave every queue
	"remove_from_groups", // leave every group
	"callflows",          // new versions without the user; the old versions deleted
	"numbers",            // direct lines: numbers reassigned to CallflowTo or deactivated; the callflows deleted
	"licence",            // release it (ReleaseLicence), or keep it: then delete waits
	"delete",             // DeleteUser; waits with the blockers if any remain
}

// OffboardStepNames returns the offboarding job's step names, in the order they run.
func OffboardStepNames() []string { return slices.Clone(offboardSteps) }

// OffboardOptions choose what happens to what the user leaves behind.
type OffboardOptions struct {
	// CallflowTo takes over the numbers of the user's direct-line callflows
	// (those that ring only the user); "" deactivates those numbers instead.
	// It must be a callflow of the account that does not ring the user.
	CallflowTo string `json:"callflow_to"`
	// ReleaseLicence frees the user's licence (the seat stays on the
	// account); false keeps it, and the delete step waits until an admin
	// reassigns it.
	ReleaseLicence bool `json:"release_licence"`
}

// Job is a resumable offboarding: Steps run one at a time, each in its own
// transaction that also marks it done, so a crash between steps neither
// repeats nor loses one.
type Job struct {
	ID        string          `json:"id"`
	AccountID string          `json:"account_id"`
	Kind      string          `json:"kind"` // "offboard"
	UserID    string          `json:"user_id"`
	UserLabel string          `json:"user_label"` // "1002 Ada Lovelace", kept after the user is gone
	Options   OffboardOptions `json:"options"`
	State     string          `json:"state"`
	Steps     []JobStep       `json:"steps"`
	Actor     Actor           `json:"actor"` // who started it
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
}

// JobStep is one step of a job. Detail says what it did, or why it waits or
// failed; Blockers are set when the delete step waits. MACs, on sign_out and
// delete, are the devices the caller should send check-sync to: those with a
// line for the user and those whose registrations were removed.
type JobStep struct {
	Name      string    `json:"name"`
	State     string    `json:"state"`
	Detail    string    `json:"detail"`
	Blockers  []Blocker `json:"blockers,omitempty"`
	MACs      []string  `json:"macs,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// next returns the index of the first step not done or skipped, or -1.
func (j Job) next() int {
	for i, s := range j.Steps {
		if s.State != JobStepDone && s.State != JobStepSkipped {
			return i
		}
	}
	return -1
}

// StartOffboard creates an offboarding job for the user, in state running with
// every step pending; it runs nothing. Run it with ResumeOffboard (or one step
// at a time with RunOffboardStep). A second job for a user whose job is still
// running or waiting is refused with RuleError offboard_in_progress (
// Detail["job_id"]).
func (db *DB) StartOffboard(accountID, userID string, opts OffboardOptions, actor Actor) (Job, error) {
	opts.CallflowTo = strings.TrimSpace(opts.CallflowTo)
	var j Job
	err := db.update(func(t *tx) error {
		u, err := t.user(accountID, userID)
		if err != nil {
			return err
		}
		if opts.CallflowTo != "" {
			cf, err := t.callflow(accountID, opts.CallflowTo)
			if err != nil {
				return invalid("callflow_to", "must be a callflow of this account")
			}
			if cf.Names(userID) {
				return invalid("callflow_to", "must not ring the user being offboarded")
			}
		}
		jobs, err := t.jobs(accountID)
		if err != nil {
			return err
		}
		for _, o := range jobs {
			if o.UserID == userID && (o.State == JobRunning || o.State == JobWaiting) {
				return &RuleError{Code: "offboard_in_progress", Kind: KindConflict,
					Message: fmt.Sprintf("user %s already has offboarding job %s (%s)", u.Extension, o.ID, o.State),
					Detail:  map[string]any{"job_id": o.ID}}
			}
		}
		j = Job{ID: newID("job"), AccountID: accountID, Kind: "offboard", UserID: userID, UserLabel: u.Label(), Options: opts,
			State: JobRunning, Actor: actor, CreatedAt: t.now, UpdatedAt: t.now}
		for _, name := range offboardSteps {
			j.Steps = append(j.Steps, JobStep{Name: name, State: JobStepPending, UpdatedAt: t.now})
		}
		if err := put(t.Bucket(bJobs), k(accountID, j.ID), j); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "offboard.start", TargetKind: "user", TargetID: userID, TargetLabel: j.UserLabel,
			Detail: map[string]string{"job_id": j.ID, "callflow_to": opts.CallflowTo, "release_licence": fmt.Sprint(opts.ReleaseLicence)}})
	})
	if err != nil {
		return Job{}, fmt.Errorf("offboard user %s: %w", userID, err)
	}
	return j, nil
}

// Job returns one job of the account.
func (db *DB) Job(accountID, id string) (Job, error) {
	var j Job
	err := db.view(func(t *tx) error {
		var err error
		j, err = t.job(accountID, id)
		return err
	})
	return j, err
}

func (t *tx) job(acct, id string) (Job, error) {
	var j Job
	if err := get(t.Bucket(bJobs), k(acct, id), &j); err != nil {
		return Job{}, fmt.Errorf("job %s: %w", id, err)
	}
	return j, nil
}

// Jobs lists the account's jobs, oldest first.
func (db *DB) Jobs(accountID string) ([]Job, error) {
	var out []Job
	err := db.view(func(t *tx) error {
		if _, err := t.account(accountID); err != nil {
			return err
		}
		var err error
		out, err = t.jobs(accountID)
		return err
	})
	return out, err
}

func (t *tx) jobs(acct string) ([]Job, error) {
	var out []Job
	err := each(t.Bucket(bJobs), acct, func(_, v []byte) error {
		var j Job
		if err := decode(v, &j); err != nil {
			return err
		}
		out = append(out, j)
		return nil
	})
	sortJobs(out)
	return out, err
}

func sortJobs(js []Job) {
	sort.Slice(js, func(i, k int) bool {
		if !js[i].CreatedAt.Equal(js[k].CreatedAt) {
			return js[i].CreatedAt.Before(js[k].CreatedAt)
		}
		return js[i].ID < js[k].ID
	})
}

// RunningJobs lists the jobs of every account that are still running (to
// resume after a restart), oldest first.
func (db *DB) RunningJobs() ([]Job, error) {
	var out []Job
	err := db.view(func(t *tx) error {
		return t.Bucket(bJobs).ForEach(func(_, v []byte) error {
			var j Job
			if err := decode(v, &j); err != nil {
				return err
			}
			if j.State == JobRunning {
				out = append(out, j)
			}
			return nil
		})
	})
	sortJobs(out)
	return out, err
}

// errStepRefused rolls back a step's transaction; the refusal is then
// recorded on the job in a transaction of its own.
var errStepRefused = errors.New("offboarding step refused")

// stepResult is what a step did.
type stepResult struct {
	state  string // JobStepDone or JobStepSkipped
	detail string
	macs   []string
}

// RunOffboardStep runs the next pending step of a running job, in one
// transaction that applies the step's effect, marks it done and audits it
// ("offboard.<step>"). When the step cannot complete, its effect is rolled
// back and the job becomes waiting (a rule or a blocker, e.g. the operator
// extension or a registration that came back: Detail says which, Blockers
// lists them) or failed (an error). A job that is not running is returned
// unchanged. The returned error is only for a missing job or a storage failure.
func (db *DB) RunOffboardStep(accountID, id string, actor Actor) (Job, error) {
	var j Job
	var stepErr error
	step := -1
	err := db.update(func(t *tx) error {
		var err error
		if j, err = t.job(accountID, id); err != nil {
			return err
		}
		step = j.next()
		if j.State != JobRunning || step < 0 {
			return nil
		}
		res, err := t.runStep(j, step, actor)
		if err != nil {
			stepErr = err
			return errStepRefused
		}
		s := &j.Steps[step]
		s.State, s.Detail, s.MACs, s.Blockers, s.UpdatedAt = res.state, res.detail, res.macs, nil, t.now
		if j.next() < 0 {
			j.State = JobDone
		}
		return t.saveJob(&j, actor, s.Name, "ok", res.detail)
	})
	if !errors.Is(err, errStepRefused) {
		if err != nil {
			return Job{}, fmt.Errorf("run job %s: %w", id, err)
		}
		return j, nil
	}
	state, detail, blockers := JobStepFailed, stepErr.Error(), []Blocker(nil)
	var rule *RuleError
	var inUse *InUseError
	switch {
	case errors.As(stepErr, &inUse):
		state, blockers = JobStepWaiting, inUse.Blockers
		detail = "waiting for: " + blockerReasons(inUse.Blockers)
	case errors.As(stepErr, &rule):
		state, detail = JobStepWaiting, rule.Message
	}
	err = db.update(func(t *tx) error {
		var err error
		if j, err = t.job(accountID, id); err != nil {
			return err
		}
		if j.State != JobRunning || j.next() != step {
			return nil // someone else moved the job on meanwhile
		}
		s := &j.Steps[step]
		s.State, s.Detail, s.Blockers, s.UpdatedAt = state, detail, blockers, t.now
		j.State = JobWaiting
		if state == JobStepFailed {
			j.State = JobFailed
		}
		return t.saveJob(&j, actor, s.Name, state, detail)
	})
	if err != nil {
		return Job{}, fmt.Errorf("run job %s: %w", id, err)
	}
	return j, nil
}

func (t *tx) saveJob(j *Job, actor Actor, step, result, detail string) error {
	j.UpdatedAt = t.now
	if err := put(t.Bucket(bJobs), k(j.AccountID, j.ID), *j); err != nil {
		return err
	}
	return t.audit(AuditEntry{AccountID: j.AccountID, Actor: actor, Action: "offboard." + step, TargetKind: "user", TargetID: j.UserID,
		TargetLabel: j.UserLabel, Result: result, Detail: map[string]string{"job_id": j.ID, "detail": detail}})
}

// ResumeOffboard runs a job until it is done, waiting or failed, and returns
// it. A waiting or failed job first goes back to running, and the step that
// stopped it is retried; a done job is returned unchanged.
func (db *DB) ResumeOffboard(accountID, id string, actor Actor) (Job, error) {
	err := db.update(func(t *tx) error {
		j, err := t.job(accountID, id)
		if err != nil {
			return err
		}
		if j.State != JobWaiting && j.State != JobFailed {
			return nil
		}
		if i := j.next(); i >= 0 {
			j.Steps[i].State, j.Steps[i].UpdatedAt = JobStepPending, t.now
		}
		j.State = JobRunning
		return t.saveJob(&j, actor, "resume", "ok", "")
	})
	if err != nil {
		return Job{}, fmt.Errorf("resume job %s: %w", id, err)
	}
	for range len(offboardSteps) + 1 {
		j, err := db.RunOffboardStep(accountID, id, actor)
		if err != nil || j.State != JobRunning {
			return j, err
		}
	}
	return db.Job(accountID, id)
}

// runStep applies step i of j inside t.
func (t *tx) runStep(j Job, i int, actor Actor) (stepResult, error) {
	acct, uid := j.AccountID, j.UserID
	done := func(format string, args ...any) (stepResult, error) {
		return stepResult{state: JobStepDone, detail: fmt.Sprintf(format, args...)}, nil
	}
	switch j.Steps[i].Name {
	case "disable":
		var u User
		if err := t.setStatus(acct, uid, StatusDisabled, actor, &u); err != nil {
			return stepResult{}, err
		}
		return done("user %s disabled", u.Extension)

	case "sign_out":
		u, err := t.user(acct, uid)
		if err != nil {
			return stepResult{}, err
		}
		removed := t.liveBindings(acct, uid)
		if err := t.deleteBindings(acct, uid); err != nil {
			return stepResult{}, err
		}
		if err := t.audit(AuditEntry{AccountID: acct, Actor: actor, Action: "registrations.sign_out", TargetKind: "user", TargetID: uid, TargetLabel: u.Label(),
			Detail: map[string]string{"removed": fmt.Sprint(len(removed))}}); err != nil {
			return stepResult{}, err
		}
		macs, err := t.userDeviceMACs(acct, uid)
		if err != nil {
			return stepResult{}, err
		}
		for _, b := range removed {
			if b.MAC != "" && !slices.Contains(macs, b.MAC) {
				macs = append(macs, b.MAC)
			}
		}
		return stepResult{state: JobStepDone, detail: fmt.Sprintf("removed %d registration(s)", len(removed)), macs: macs}, nil

	case "remove_from_queues":
		qs, err := t.queues(acct)
		if err != nil {
			return stepResult{}, err
		}
		var left []string
		for _, q := range qs {
			if slices.Contains(q.Members, uid) {
				if err := t.removeQueueMember(&q, uid, actor, "offboarding"); err != nil {
					return stepResult{}, err
				}
				left = append(left, q.Label())
			}
		}
		if len(left) == 0 {
			return done("in no queue")
		}
		return done("removed from %s", strings.Join(left, ", "))

	case "remove_from_groups":
		gs, err := t.removeFromGroups(acct, uid, actor, "offboarding")
		if err != nil {
			return stepResult{}, err
		}
		if len(gs) == 0 {
			return done("in no group")
		}
		labels := make([]string, len(gs))
		for i, g := range gs {
			labels[i] = g.Label()
		}
		return done("removed from %s", strings.Join(labels, ", "))

	case "callflows":
		return t.offboardCallflows(acct, uid, actor)

	case "numbers":
		return t.offboardNumbers(acct, uid, j.Options.CallflowTo, actor)

	case "licence":
		l, ok, err := t.licenceOf(acct, uid)
		if err != nil {
			return stepResult{}, err
		}
		if !ok {
			return done("held no licence")
		}
		if !j.Options.ReleaseLicence {
			return stepResult{state: JobStepSkipped,
				detail: fmt.Sprintf("licence %s kept (release_licence false); reassign it to another user, then resume the job", l.ID)}, nil
		}
		from := t.memberLabels(acct, []string{uid})
		l.UserID, l.AssignedAt = "", time.Time{}
		if err := put(t.Bucket(bLicences), k(acct, l.ID), l); err != nil {
			return stepResult{}, err
		}
		if err := t.audit(AuditEntry{AccountID: acct, Actor: actor, Action: "licence.release", TargetKind: "licence", TargetID: l.ID, TargetLabel: l.Type,
			Detail: map[string]string{"from": from}}); err != nil {
			return stepResult{}, err
		}
		return done("licence %s released; the seat stays on the account", l.ID)

	case "delete":
		if _, err := t.user(acct, uid); errors.Is(err, ErrNotFound) {
			return done("user %s was already deleted", j.UserLabel)
		}
		macs, err := t.userDeviceMACs(acct, uid) // before deleteUser clears their lines
		if err != nil {
			return stepResult{}, err
		}
		if err := t.deleteUser(acct, uid, actor); err != nil {
			return stepResult{}, err
		}
		return stepResult{state: JobStepDone, detail: fmt.Sprintf("user %s deleted", j.UserLabel), macs: macs}, nil
	}
	return stepResult{}, fmt.Errorf("unknown step %q", j.Steps[i].Name)
}

// userDeviceMACs lists the devices with a line assigned to the user.
func (t *tx) userDeviceMACs(acct, uid string) ([]string, error) {
	ds, err := t.devices(acct)
	if err != nil {
		return nil, err
	}
	var macs []string
	for _, d := range ds {
		if slices.ContainsFunc(d.Lines, func(l DeviceLine) bool { return l.UserID == uid }) {
			macs = append(macs, d.MAC)
		}
	}
	return macs, nil
}

// withoutUser returns steps with userID taken out of every ring step; a ring
// step left with nobody is dropped.
func withoutUser(steps []Step, userID string) []Step {
	var out []Step
	for _, s := range steps {
		if s.Type == StepRing {
			s.UserIDs = slices.DeleteFunc(slices.Clone(s.UserIDs), func(id string) bool { return id == userID })
			if len(s.UserIDs) == 0 {
				continue
			}
		}
		out = append(out, s)
	}
	return out
}

// isDirectLine reports whether cf rings userID and nobody else: without them
// no step would be left.
func isDirectLine(cf Callflow, userID string) bool {
	return cf.Names(userID) && len(withoutUser(cf.Steps, userID)) == 0
}

// offboardCallflows handles every callflow version that rings the user except
// direct lines (left to the numbers step). An ACTIVE version, or the newest
// version of its lineage, gets a new version without the user (taking over
// the numbers, if any); then the old version, now AVAILABLE, is deleted. An
// older AVAILABLE version is just deleted.
func (t *tx) offboardCallflows(acct, uid string, actor Actor) (stepResult, error) {
	cfs, err := t.callflows(acct)
	if err != nil {
		return stepResult{}, err
	}
	latest := map[string]int{}
	for _, cf := range cfs {
		latest[cf.Lineage] = max(latest[cf.Lineage], cf.Version)
	}
	var did []string
	for _, cf := range cfs {
		if !cf.Names(uid) || isDirectLine(cf, uid) {
			continue
		}
		if cf.Status == CallflowActive || cf.Version == latest[cf.Lineage] {
			nv, err := t.newVersion(cf, CallflowSpec{Name: cf.Name, Steps: withoutUser(cf.Steps, uid)}, actor)
			if err != nil {
				return stepResult{}, err
			}
			latest[cf.Lineage] = nv.Version
			did = append(did, fmt.Sprintf("%s → v%d", cf.Label(), nv.Version))
		}
		old, err := t.callflow(acct, cf.ID)
		if err != nil {
			return stepResult{}, err
		}
		if err := t.deleteCallflow(old, actor); err != nil {
			return stepResult{}, err
		}
		did = append(did, "deleted "+cf.Label())
	}
	if len(did) == 0 {
		return stepResult{state: JobStepDone, detail: "in no shared callflow"}, nil
	}
	return stepResult{state: JobStepDone, detail: strings.Join(did, "; ")}, nil
}

// offboardNumbers handles the user's direct lines (callflows that ring only
// them): their numbers move to callflowTo, or are deactivated when it is "";
// then the callflows, now AVAILABLE, are deleted.
func (t *tx) offboardNumbers(acct, uid, callflowTo string, actor Actor) (stepResult, error) {
	cfs, err := t.callflows(acct)
	if err != nil {
		return stepResult{}, err
	}
	var to *Callflow
	if callflowTo != "" {
		cf, err := t.callflow(acct, callflowTo)
		if err != nil {
			return stepResult{}, fmt.Errorf("callflow_to %s is gone: %w", callflowTo, err)
		}
		if cf.Names(uid) {
			return stepResult{}, fmt.Errorf("callflow_to %s rings the user being offboarded", callflowTo)
		}
		to = &cf
	}
	var did []string
	for _, cf := range cfs {
		if !isDirectLine(cf, uid) {
			continue
		}
		if len(cf.Numbers) > 0 {
			if to != nil {
				if err := t.moveNumbers(cf, to, actor, "callflow.reassign"); err != nil {
					return stepResult{}, err
				}
				did = append(did, fmt.Sprintf("%s → %s", strings.Join(cf.Numbers, ", "), to.Label()))
			} else {
				for _, e := range cf.Numbers {
					n, err := t.number(acct, e)
					if err != nil {
						return stepResult{}, err
					}
					if err := t.deactivateNumber(&n, actor); err != nil {
						return stepResult{}, err
					}
				}
				did = append(did, "deactivated "+strings.Join(cf.Numbers, ", "))
			}
		}
		old, err := t.callflow(acct, cf.ID)
		if err != nil {
			return stepResult{}, err
		}
		if err := t.deleteCallflow(old, actor); err != nil {
			return stepResult{}, err
		}
		did = append(did, "deleted "+cf.Label())
	}
	if len(did) == 0 {
		return stepResult{state: JobStepDone, detail: "no direct line"}, nil
	}
	return stepResult{state: JobStepDone, detail: strings.Join(did, "; ")}, nil
}

// blockerReasons says in words what a waiting delete waits for.
func blockerReasons(bs []Blocker) string {
	parts := make([]string, 0, len(bs))
	for _, b := range bs {
		switch b.Kind {
		case "enabled":
			parts = append(parts, "the user is enabled")
		case "registration":
			parts = append(parts, "a registration from "+b.Contact)
		case "queue":
			parts = append(parts, "member of queue "+b.Name)
		case "callflow":
			parts = append(parts, fmt.Sprintf("rung by callflow %s v%d (%s)", b.Name, b.Version, b.Status))
		case "licence":
			parts = append(parts, "licence held ("+b.ID+")")
		case "operator":
			parts = append(parts, "the operator extension: set another operator first")
		default:
			parts = append(parts, strings.TrimSpace(b.Kind+" "+b.ID+" "+b.Detail))
		}
	}
	return strings.Join(parts, "; ")
}
