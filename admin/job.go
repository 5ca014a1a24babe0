package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"

	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/store"
)

// offboardRequest is the body of POST /users/{id}/offboard; it may be empty.
// callflow_to takes over the numbers of the user's direct lines (omitted:
// those numbers are deactivated); release_licence frees the user's licence
// (the seat stays on the account).
type offboardRequest struct {
	CallflowTo     string `json:"callflow_to,omitempty"`
	ReleaseLicence bool   `json:"release_licence,omitempty"`
}

// jobAccepted answers a started or resumed job (202): poll GET /jobs/{id}.
type jobAccepted struct {
	JobID string `json:"job_id"`
}

type jobOptionsJSON struct {
	CallflowTo     *string `json:"callflow_to"`
	ReleaseLicence bool    `json:"release_licence"`
}

// jobStepJSON is one step: pending, done, skipped, waiting or failed. detail
// says what it did or why it stopped; blockers are set when the delete step
// waits; macs are the phones sent a check-sync after the step.
type jobStepJSON struct {
	Name      string        `json:"name"`
	State     string        `json:"state"`
	Detail    string        `json:"detail"`
	Blockers  []blockerJSON `json:"blockers,omitempty"`
	MACs      []string      `json:"macs,omitempty"`
	UpdatedAt string        `json:"updated_at" format:"date-time"`
}

// jobJSON is an offboarding job: state running, waiting (a step needs a
// person: see its detail and blockers, then POST /resume), done or failed.
type jobJSON struct {
	ID        string         `json:"id"`
	Kind      string         `json:"kind"`
	UserID    string         `json:"user_id"`
	UserLabel string         `json:"user_label"`
	State     string         `json:"state"`
	Options   jobOptionsJSON `json:"options"`
	Steps     []jobStepJSON  `json:"steps"`
	StartedBy string         `json:"started_by"`
	CreatedAt string         `json:"created_at" format:"date-time"`
	UpdatedAt string         `json:"updated_at" format:"date-time"`
}

type jobList struct {
	Jobs []jobJSON `json:"jobs"`
}

func jobOut(j store.Job) jobJSON {
	out := jobJSON{ID: j.ID, Kind: j.Kind, UserID: j.UserID, UserLabel: j.UserLabel, State: j.State,
		Options:   jobOptionsJSON{CallflowTo: optString(j.Options.CallflowTo), ReleaseLicence: j.Options.ReleaseLicence},
		Steps:     make([]jobStepJSON, 0, len(j.Steps)),
		StartedBy: j.Actor.Name, CreatedAt: rfc3339(j.CreatedAt), UpdatedAt: rfc3339(j.UpdatedAt)}
	for _, st := range j.Steps {
		sj := jobStepJSON{Name: st.Name, State: st.State, Detail: st.Detail, MACs: st.MACs, UpdatedAt: rfc3339(st.UpdatedAt)}
		if len(st.Blockers) > 0 {
			sj.Blockers = renderBlockers(st.Blockers)
		}
		out.Steps = append(out.Steps, sj)
	}
	return out
}

// jobRunner runs offboarding jobs and sends the check-syncs their steps ask
// for. The store makes every step one transaction, so two runners of one job
// never repeat a step; a runner only adds the Yealink notifications.
type jobRunner struct {
	db       *store.DB
	notifier Notifier
	log      *slog.Logger
}

func newJobRunner(db *store.DB, n Notifier, log *slog.Logger) *jobRunner {
	return &jobRunner{db: db, notifier: n, log: log}
}

// start runs the job in the background. It outlives the request on purpose:
// a job stopped by a crash is continued by ResumeJobs at the next start.
func (r *jobRunner) start(ctx context.Context, acct, id string, actor store.Actor) {
	ctx = context.WithoutCancel(ctx)
	go func() {
		defer func() {
			if p := recover(); p != nil { // never take the process down; ResumeJobs retries at the next start
				r.log.ErrorContext(ctx, "offboarding job panicked", "account", acct, "job_id", id, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			}
		}()
		if _, err := r.run(ctx, acct, id, actor); err != nil {
			r.log.ErrorContext(ctx, "offboarding job", "account", acct, "job_id", id, "err", err)
		}
	}()
}

// run resumes the job until it is done, waiting or failed, then sends a
// check-sync to the phones of every step that finished during this run
// (best effort, logged): their configs now have the user's lines cleared.
func (r *jobRunner) run(ctx context.Context, acct, id string, actor store.Actor) (store.Job, error) {
	before, err := r.db.Job(acct, id)
	if err != nil {
		return store.Job{}, err
	}
	after, err := r.db.ResumeOffboard(acct, id, actor)
	if err != nil {
		return store.Job{}, err
	}
	var macs []string
	for i, st := range after.Steps {
		if st.State != store.JobStepDone || i < len(before.Steps) && before.Steps[i].State == store.JobStepDone {
			continue
		}
		for _, m := range st.MACs {
			if !slices.Contains(macs, m) {
				macs = append(macs, m)
			}
		}
	}
	r.checkSync(ctx, acct, macs)
	level := slog.LevelInfo
	if after.State == store.JobFailed {
		level = slog.LevelWarn
	}
	r.log.Log(ctx, level, "offboarding job stopped", "account", acct, "job_id", id, "user", after.UserLabel, "state", after.State)
	return after, nil
}

func (r *jobRunner) checkSync(ctx context.Context, acct string, macs []string) {
	if r.notifier == nil || len(macs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, checkSyncTimeout)
	defer cancel()
	for _, mac := range macs {
		if err := r.notifier.CheckSync(ctx, acct, mac); err != nil {
			r.log.WarnContext(ctx, "check-sync failed", "account", acct, "mac", mac, "err", err)
		}
	}
}

// ResumeJobs continues the offboarding jobs that a crash or a stop left
// running (store.DB.RunningJobs), one after another, each as the actor who
// started it, sending check-syncs as the API does. main calls it once at
// start-up, after the SIP server is serving. Waiting and failed jobs are left
// for an admin's POST /jobs/{id}/resume. It tries every job and returns the
// storage errors met, joined.
func ResumeJobs(ctx context.Context, o Options) error {
	if o.DB == nil {
		return errors.New("admin: Options.DB is required")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := newJobRunner(o.DB, o.Notifier, log.With("component", "admin"))
	jobs, err := o.DB.RunningJobs()
	if err != nil {
		return err
	}
	var errs []error
	for _, j := range jobs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := r.run(ctx, j.AccountID, j.ID, j.Actor); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func jobPath(acct, id string) string { return acct0 + acct + "/jobs/" + id }

const acct0 = v1 + "/accounts/"

// offboardUser starts the offboarding job and answers 202 at once; the job
// runs in the background. An admin may ask for release_licence: the job
// frees the seat on the admin's request, and the account keeps paying for
// it (docs/account-model.md rule 4: seats never go down).
func (s *server) offboardUser(c *gin.Context) error {
	var in offboardRequest
	if err := decodeOptionalBody(c, &in); err != nil {
		return err
	}
	acct := c.Param("account")
	a := actor(c)
	j, err := s.db.StartOffboard(acct, c.Param("id"), store.OffboardOptions{CallflowTo: in.CallflowTo, ReleaseLicence: in.ReleaseLicence}, a)
	if err != nil {
		return err
	}
	s.jobs.start(c.Request.Context(), acct, j.ID, a)
	c.Header("Location", jobPath(acct, j.ID))
	return reply(c, jobAccepted{JobID: j.ID})
}

func (s *server) listJobs(c *gin.Context) error {
	js, err := s.db.Jobs(c.Param("account"))
	if err != nil {
		return err
	}
	out := jobList{Jobs: make([]jobJSON, 0, len(js))}
	for _, j := range js {
		out.Jobs = append(out.Jobs, jobOut(j))
	}
	return reply(c, out)
}

func (s *server) getJob(c *gin.Context) error {
	j, err := s.db.Job(c.Param("account"), c.Param("id"))
	if err != nil {
		return err
	}
	return reply(c, jobOut(j))
}

// resumeJob continues a waiting or failed job (retrying the step that
// stopped it) or a running one that no process is running (after a crash);
// a done job → 409 job_done.
func (s *server) resumeJob(c *gin.Context) error {
	acct := c.Param("account")
	j, err := s.db.Job(acct, c.Param("id"))
	if err != nil {
		return err
	}
	if j.State == store.JobDone {
		return &apiError{Status: http.StatusConflict, Code: "job_done", Message: "job " + j.ID + " is done; there is nothing to resume"}
	}
	s.jobs.start(c.Request.Context(), acct, j.ID, actor(c))
	c.Header("Location", jobPath(acct, j.ID))
	return reply(c, jobAccepted{JobID: j.ID})
}
