package store

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

var bCallflows = []byte("callflows") // acct/callflow → Callflow (Status and Numbers are never stored)

// Callflow status words, upper case as the field's own screens show them
// (docs/account-model.md).
const (
	CallflowActive    = "ACTIVE"
	CallflowAvailable = "AVAILABLE"
)

// Step types.
const (
	StepRing  = "ring"  // ring UserIDs, all at once
	StepQueue = "queue" // send to QueueID
	StepGroup = "group" // send to GroupID
)

const (
	maxSteps    = 20
	maxTimeoutS = 600
)

// Step is one stage of a callflow. A ring step names one or more users, rung
// at once; a queue or group step names a queue or group of the account.
// TimeoutS is how long the step rings before the next one (0: the SIP side's
// default).
type Step struct {
	Type     string   `json:"type"`
	UserIDs  []string `json:"user_ids,omitempty"`
	QueueID  string   `json:"queue_id,omitempty"`
	GroupID  string   `json:"group_id,omitempty"`
	TimeoutS int      `json:"timeout_s,omitempty"`
}

// Callflow is one version of a callflow. Every version is its own record with
// its own id; Lineage (the id of version 1) links the versions, and Version
// counts them (a new version gets the highest version of its lineage + 1).
//
// Status and Numbers are derived on every read from the numbers that point at
// the callflow: ACTIVE with numbers, AVAILABLE without (docs/account-model.md
// rule 9).
type Callflow struct {
	ID        string    `json:"id"`
	AccountID string    `json:"account_id"`
	Lineage   string    `json:"lineage"`
	Name      string    `json:"name"`
	Version   int       `json:"version"`
	Steps     []Step    `json:"steps"`
	Status    string    `json:"status"`
	Numbers   []string  `json:"numbers"`
	CreatedAt time.Time `json:"created_at"`
}

// Label is how history shows the callflow: "Sales line v2".
func (c Callflow) Label() string { return c.Name + " v" + strconv.Itoa(c.Version) }

// Names reports whether any step of c rings userID.
func (c Callflow) Names(userID string) bool {
	for _, s := range c.Steps {
		if s.Type == StepRing && slices.Contains(s.UserIDs, userID) {
			return true
		}
	}
	return false
}

// CallflowSpec is the body of a callflow create or of a new version.
type CallflowSpec struct {
	Name  string
	Steps []Step
}

// normalize trims the spec and checks what can be checked without the store.
func (s *CallflowSpec) normalize() error {
	s.Name = strings.TrimSpace(s.Name)
	p := map[string]string{}
	if !validEntityName(s.Name) {
		p["name"] = entityNameRule
	}
	if len(s.Steps) == 0 || len(s.Steps) > maxSteps {
		p["steps"] = fmt.Sprintf("must list 1 to %d steps", maxSteps)
	}
	steps := make([]Step, len(s.Steps))
	for i, st := range s.Steps {
		f := fmt.Sprintf("steps[%d]", i)
		st.Type = strings.ToLower(strings.TrimSpace(st.Type))
		st.QueueID = strings.TrimSpace(st.QueueID)
		st.GroupID = strings.TrimSpace(st.GroupID)
		if st.TimeoutS < 0 || st.TimeoutS > maxTimeoutS {
			p[f+".timeout_s"] = fmt.Sprintf("must be 0 to %d seconds", maxTimeoutS)
		}
		switch st.Type {
		case StepRing:
			ids := make([]string, 0, len(st.UserIDs))
			for _, id := range st.UserIDs {
				id = strings.TrimSpace(id)
				if slices.Contains(ids, id) {
					p[f+".user_ids"] = "lists user " + id + " twice"
				}
				ids = append(ids, id)
			}
			st.UserIDs = ids
			if len(ids) == 0 || len(ids) > maxMemberCount {
				p[f+".user_ids"] = fmt.Sprintf("a ring step rings 1 to %d users", maxMemberCount)
			}
			if st.QueueID != "" || st.GroupID != "" {
				p[f+".type"] = "a ring step names users only"
			}
		case StepQueue:
			if st.QueueID == "" {
				p[f+".queue_id"] = "is required for a queue step"
			}
			if len(st.UserIDs) > 0 || st.GroupID != "" {
				p[f+".type"] = "a queue step names a queue only"
			}
			st.UserIDs = nil
		case StepGroup:
			if st.GroupID == "" {
				p[f+".group_id"] = "is required for a group step"
			}
			if len(st.UserIDs) > 0 || st.QueueID != "" {
				p[f+".type"] = "a group step names a group only"
			}
			st.UserIDs = nil
		default:
			p[f+".type"] = `must be "ring", "queue" or "group"`
		}
		steps[i] = st
	}
	s.Steps = steps
	if len(p) > 0 {
		return &ValidationError{Problems: p}
	}
	return nil
}

// checkRefs verifies inside t that everything the steps name exists in the account.
func (t *tx) checkRefs(acct string, steps []Step) error {
	for i, st := range steps {
		f := fmt.Sprintf("steps[%d]", i)
		switch st.Type {
		case StepRing:
			for _, id := range st.UserIDs {
				if !validID(id) {
					return invalid(f+".user_ids", "must be user ids of this account")
				}
				if _, err := t.user(acct, id); err != nil {
					return invalid(f+".user_ids", "user "+id+" does not exist in this account")
				}
			}
		case StepQueue:
			if !validID(st.QueueID) {
				return invalid(f+".queue_id", "must be a queue of this account")
			}
			if _, err := t.queue(acct, st.QueueID); err != nil {
				return invalid(f+".queue_id", "queue "+st.QueueID+" does not exist in this account")
			}
		case StepGroup:
			if !validID(st.GroupID) {
				return invalid(f+".group_id", "must be a group of this account")
			}
			if _, err := t.group(acct, st.GroupID); err != nil {
				return invalid(f+".group_id", "group "+st.GroupID+" does not exist in this account")
			}
		}
	}
	return nil
}

// CreateCallflow adds version 1 of a new callflow; it starts AVAILABLE with no numbers.
func (db *DB) CreateCallflow(accountID string, spec CallflowSpec, actor Actor) (Callflow, error) {
	if err := spec.normalize(); err != nil {
		return Callflow{}, err
	}
	var cf Callflow
	err := db.update(func(t *tx) error {
		if _, err := t.account(accountID); err != nil {
			return err
		}
		var err error
		cf, err = t.createCallflow(accountID, "", 1, spec, actor)
		return err
	})
	if err != nil {
		return Callflow{}, fmt.Errorf("create callflow %s: %w", spec.Name, err)
	}
	return cf, nil
}

// createCallflow stores a new version (lineage "" starts a new lineage) of a
// normalized spec after checking its references.
func (t *tx) createCallflow(acct, lineage string, version int, spec CallflowSpec, actor Actor) (Callflow, error) {
	if err := t.checkRefs(acct, spec.Steps); err != nil {
		return Callflow{}, err
	}
	cf := Callflow{ID: newID("cf"), AccountID: acct, Lineage: lineage, Name: spec.Name, Version: version, Steps: spec.Steps, CreatedAt: t.now}
	if cf.Lineage == "" {
		cf.Lineage = cf.ID
	}
	if err := t.putCallflow(cf); err != nil {
		return Callflow{}, err
	}
	cf.Status, cf.Numbers = CallflowAvailable, []string{}
	return cf, t.audit(AuditEntry{AccountID: acct, Actor: actor, Action: "callflow.create", TargetKind: "callflow", TargetID: cf.ID, TargetLabel: cf.Label(),
		Detail: map[string]string{"lineage": cf.Lineage, "version": strconv.Itoa(cf.Version), "users": t.memberLabels(acct, cf.users())}})
}

// users lists every user the callflow's steps ring, once each, in step order.
func (c Callflow) users() []string {
	var out []string
	for _, s := range c.Steps {
		for _, id := range s.UserIDs {
			if !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	return out
}

func (t *tx) putCallflow(cf Callflow) error {
	cf.Status, cf.Numbers = "", nil // derived, never stored
	return put(t.Bucket(bCallflows), k(cf.AccountID, cf.ID), cf)
}

// Callflow returns one callflow version with its status and numbers.
func (db *DB) Callflow(accountID, id string) (Callflow, error) {
	var cf Callflow
	err := db.view(func(t *tx) error {
		var err error
		cf, err = t.callflow(accountID, id)
		return err
	})
	return cf, err
}

func (t *tx) callflow(acct, id string) (Callflow, error) {
	var cf Callflow
	if err := get(t.Bucket(bCallflows), k(acct, id), &cf); err != nil {
		return Callflow{}, fmt.Errorf("callflow %s: %w", id, err)
	}
	nums, err := t.callflowNumbers(acct)
	if err != nil {
		return Callflow{}, err
	}
	return cf.derive(nums), nil
}

func (c Callflow) derive(nums map[string][]string) Callflow {
	c.Numbers = nums[c.ID]
	if c.Numbers == nil {
		c.Numbers = []string{}
	}
	c.Status = CallflowAvailable
	if len(c.Numbers) > 0 {
		c.Status = CallflowActive
	}
	return c
}

// Callflows lists every version of every callflow of the account, ordered by
// name, then lineage, then version (newest first).
func (db *DB) Callflows(accountID string) ([]Callflow, error) {
	var out []Callflow
	err := db.view(func(t *tx) error {
		if _, err := t.account(accountID); err != nil {
			return err
		}
		var err error
		out, err = t.callflows(accountID)
		return err
	})
	return out, err
}

func (t *tx) callflows(acct string) ([]Callflow, error) {
	nums, err := t.callflowNumbers(acct)
	if err != nil {
		return nil, err
	}
	var out []Callflow
	err = each(t.Bucket(bCallflows), acct, func(_, v []byte) error {
		var cf Callflow
		if err := decode(v, &cf); err != nil {
			return err
		}
		out = append(out, cf.derive(nums))
		return nil
	})
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.Lineage != b.Lineage {
			return a.Lineage < b.Lineage
		}
		return a.Version > b.Version
	})
	return out, err
}

// callflowsReferencing returns the ids of the callflow versions with a step for which match is true.
func (t *tx) callflowsReferencing(acct string, match func(Step) bool) ([]string, error) {
	var ids []string
	err := each(t.Bucket(bCallflows), acct, func(_, v []byte) error {
		var cf Callflow
		if err := decode(v, &cf); err != nil {
			return err
		}
		if slices.ContainsFunc(cf.Steps, match) {
			ids = append(ids, cf.ID)
		}
		return nil
	})
	return ids, err
}

// NewCallflowVersion is an edit (PUT): it stores spec as a new callflow (new id,
// same lineage, the lineage's highest version + 1) that takes over every number
// of callflow id. The old version stays, now AVAILABLE. It returns the new one.
func (db *DB) NewCallflowVersion(accountID, id string, spec CallflowSpec, actor Actor) (Callflow, error) {
	if err := spec.normalize(); err != nil {
		return Callflow{}, err
	}
	var cf Callflow
	err := db.update(func(t *tx) error {
		old, err := t.callflow(accountID, id)
		if err != nil {
			return err
		}
		cf, err = t.newVersion(old, spec, actor)
		return err
	})
	if err != nil {
		return Callflow{}, fmt.Errorf("new version of callflow %s: %w", id, err)
	}
	return cf, nil
}

func (t *tx) newVersion(old Callflow, spec CallflowSpec, actor Actor) (Callflow, error) {
	latest := 0
	if err := each(t.Bucket(bCallflows), old.AccountID, func(_, v []byte) error {
		var cf Callflow
		if err := decode(v, &cf); err != nil {
			return err
		}
		if cf.Lineage == old.Lineage && cf.Version > latest {
			latest = cf.Version
		}
		return nil
	}); err != nil {
		return Callflow{}, err
	}
	cf, err := t.createCallflow(old.AccountID, old.Lineage, latest+1, spec, actor)
	if err != nil {
		return Callflow{}, err
	}
	if err := t.moveNumbers(old, &cf, actor, "callflow.new_version"); err != nil {
		return Callflow{}, err
	}
	return cf, nil
}

// moveNumbers routes every number of from to to (updating to's derived
// fields) and audits the move as action.
func (t *tx) moveNumbers(from Callflow, to *Callflow, actor Actor, action string) error {
	moved := []string{}
	ns, err := t.numbers(from.AccountID)
	if err != nil {
		return err
	}
	for _, n := range ns {
		if n.CallflowID != from.ID {
			continue
		}
		if err := t.routeNumber(&n, to, actor); err != nil {
			return err
		}
		moved = append(moved, n.E164)
	}
	to.Numbers = append(to.Numbers, moved...)
	sort.Strings(to.Numbers)
	if len(to.Numbers) > 0 {
		to.Status = CallflowActive
	}
	return t.audit(AuditEntry{AccountID: from.AccountID, Actor: actor, Action: action, TargetKind: "callflow", TargetID: from.ID, TargetLabel: from.Label(),
		Detail: map[string]string{"to": to.ID, "to_label": to.Label(), "numbers": strings.Join(moved, ",")}})
}

// ReassignCallflow moves every number of callflow id to callflow to
// (docs/account-model.md rule 9);
// id becomes AVAILABLE. It returns both callflows afterwards.
func (db *DB) ReassignCallflow(accountID, id, to string, actor Actor) (from, dest Callflow, err error) {
	err = db.update(func(t *tx) error {
		if from, err = t.callflow(accountID, id); err != nil {
			return err
		}
		if to == id {
			return invalid("to", "must be another callflow")
		}
		if dest, err = t.callflow(accountID, to); err != nil {
			return invalid("to", "must be a callflow of this account")
		}
		if err := t.moveNumbers(from, &dest, actor, "callflow.reassign"); err != nil {
			return err
		}
		from.Status, from.Numbers = CallflowAvailable, []string{}
		return nil
	})
	if err != nil {
		return Callflow{}, Callflow{}, fmt.Errorf("reassign callflow %s: %w", id, err)
	}
	return from, dest, nil
}

// DeleteCallflow deletes an AVAILABLE callflow version. An ACTIVE one is
// refused with RuleError callflow_active (Detail["numbers"] lists its
// numbers): reassign them or deactivate them first.
func (db *DB) DeleteCallflow(accountID, id string, actor Actor) error {
	err := db.update(func(t *tx) error {
		cf, err := t.callflow(accountID, id)
		if err != nil {
			return err
		}
		return t.deleteCallflow(cf, actor)
	})
	if err != nil {
		return fmt.Errorf("delete callflow %s: %w", id, err)
	}
	return nil
}

func (t *tx) deleteCallflow(cf Callflow, actor Actor) error {
	if cf.Status == CallflowActive {
		return &RuleError{Code: "callflow_active", Kind: KindConflict,
			Message: fmt.Sprintf("callflow %s is ACTIVE on %s; reassign or deactivate its numbers first", cf.Label(), strings.Join(cf.Numbers, ", ")),
			Detail:  map[string]any{"numbers": cf.Numbers}}
	}
	if err := t.Bucket(bCallflows).Delete([]byte(k(cf.AccountID, cf.ID))); err != nil {
		return err
	}
	return t.audit(AuditEntry{AccountID: cf.AccountID, Actor: actor, Action: "callflow.delete", TargetKind: "callflow", TargetID: cf.ID, TargetLabel: cf.Label(),
		Detail: map[string]string{"lineage": cf.Lineage, "version": strconv.Itoa(cf.Version)}})
}

// callflowUserBlockers is a userBlockerHooks entry: one `callflow` blocker per
// callflow version whose steps ring the user, ACTIVE or AVAILABLE, in the
// order Callflows lists them.
func callflowUserBlockers(t *tx, acct string, u User) ([]Blocker, error) {
	cfs, err := t.callflows(acct)
	if err != nil {
		return nil, err
	}
	var bs []Blocker
	for _, cf := range cfs {
		if cf.Names(u.ID) {
			detail := "delete this AVAILABLE version"
			if cf.Status == CallflowActive {
				detail = "edit the callflow without the user (a new version), or reassign its numbers"
			}
			bs = append(bs, Blocker{Kind: "callflow", ID: cf.ID, Name: cf.Name, Version: cf.Version, Status: cf.Status, Detail: detail})
		}
	}
	return bs, nil
}

// Route kinds.
const (
	RouteUser   = "user"
	RouteQueue  = "queue"
	RouteGroup  = "group"
	RouteNumber = "number"
)

// RouteResult says what a dialled target is and whom to ring first.
//
//   - Kind "user": UserIDs is the user; Disabled if the user is disabled.
//   - Kind "queue": UserIDs are the queue's members.
//   - Kind "group": UserIDs are the group's members; GroupKind is paging or
//     ring; Disabled if the group is disabled.
//   - Kind "number": Callflow is the number's ACTIVE callflow and Step its
//     first step; UserIDs are that step's users (ring), the queue's members
//     (queue) or the group's members (group, with GroupKind, and Disabled if
//     the group is disabled). TimeoutS is the step's timeout (0: default).
//
// UserIDs may be empty and may name disabled users: the SIP side skips
// disabled and unregistered users itself (announcement when every user it
// would ring is disabled, 480 when none is reachable).
type RouteResult struct {
	Kind      string
	ID        string // the user's, queue's or group's id; the E.164 for a number
	Name      string // the user's, queue's or group's name; the callflow's name for a number
	GroupKind string
	Callflow  *Callflow
	Step      *Step
	UserIDs   []string
	TimeoutS  int
	Disabled  bool
}

// Route resolves a dialled string in an account: an extension (user, queue
// or group), else an E.164 number with or without "+". An unknown target, or
// a number that is AVAILABLE, gives ErrNotFound.
func (db *DB) Route(accountID, target string) (RouteResult, error) {
	target = strings.TrimSpace(target)
	var r RouteResult
	err := db.view(func(t *tx) error {
		r = RouteResult{}
		if validExtension(target) {
			if v := t.Bucket(bExts).Get([]byte(k(accountID, target))); v != nil {
				kind, id, _ := strings.Cut(string(v), ":")
				return t.routeOwner(accountID, kind, id, &r)
			}
		}
		e, ok := NormalizeE164(target)
		if !ok {
			return fmt.Errorf("target %s: %w", target, ErrNotFound)
		}
		n, err := t.number(accountID, e)
		if err != nil {
			return err
		}
		if n.Status != NumberActive {
			return fmt.Errorf("number %s is available: %w", e, ErrNotFound)
		}
		cf, err := t.callflow(accountID, n.CallflowID)
		if err != nil {
			return err
		}
		r.Kind, r.ID, r.Name, r.Callflow = RouteNumber, e, cf.Name, &cf
		if len(cf.Steps) == 0 {
			return nil
		}
		st := cf.Steps[0]
		r.Step, r.TimeoutS = &st, st.TimeoutS
		switch st.Type {
		case StepRing:
			r.UserIDs = slices.Clone(st.UserIDs)
		case StepQueue:
			q, err := t.queue(accountID, st.QueueID)
			if err != nil {
				return err
			}
			r.UserIDs = slices.Clone(q.Members)
		case StepGroup:
			g, err := t.group(accountID, st.GroupID)
			if err != nil {
				return err
			}
			r.UserIDs, r.GroupKind, r.Disabled = slices.Clone(g.Members), g.Kind, g.Status == StatusDisabled
		}
		return nil
	})
	if err != nil {
		return RouteResult{}, fmt.Errorf("route %s: %w", target, err)
	}
	return r, nil
}

func (t *tx) routeOwner(acct, kind, id string, r *RouteResult) error {
	switch kind {
	case "user":
		u, err := t.user(acct, id)
		if err != nil {
			return err
		}
		*r = RouteResult{Kind: RouteUser, ID: u.ID, Name: u.Name, UserIDs: []string{u.ID}, Disabled: u.Status == StatusDisabled}
	case "queue":
		q, err := t.queue(acct, id)
		if err != nil {
			return err
		}
		*r = RouteResult{Kind: RouteQueue, ID: q.ID, Name: q.Name, UserIDs: slices.Clone(q.Members)}
	case "group":
		g, err := t.group(acct, id)
		if err != nil {
			return err
		}
		*r = RouteResult{Kind: RouteGroup, ID: g.ID, Name: g.Name, GroupKind: g.Kind, UserIDs: slices.Clone(g.Members), Disabled: g.Status == StatusDisabled}
	default:
		return fmt.Errorf("extension owner %s:%s: %w", kind, id, ErrNotFound)
	}
	return nil
}

// checkAccountModel is a checkHooks entry: queues, groups, callflows and
// numbers reference only what exists, and their indexes agree with them.
func checkAccountModel(t *tx, userExists func(acct, id string) bool) []error {
	var problems []error
	bad := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }
	exts := t.Bucket(bExts)
	queues, groups := map[string]bool{}, map[string]bool{}
	members := func(kind, key, acct string, ids []string) {
		for _, id := range ids {
			if !userExists(acct, id) {
				bad("%s %s lists missing user %s", kind, key, id)
			}
		}
	}
	_ = t.Bucket(bQueues).ForEach(func(key, v []byte) error {
		var q Queue
		if err := decode(v, &q); err != nil {
			bad("queue %s: %v", key, err)
			return nil
		}
		queues[string(key)] = true
		if owner := string(exts.Get([]byte(k(q.AccountID, q.Extension)))); owner != "queue:"+q.ID {
			bad("queue %s: extension %s is indexed to %q", key, q.Extension, owner)
		}
		members("queue", string(key), q.AccountID, q.Members)
		return nil
	})
	_ = t.Bucket(bGroups).ForEach(func(key, v []byte) error {
		var g Group
		if err := decode(v, &g); err != nil {
			bad("group %s: %v", key, err)
			return nil
		}
		groups[string(key)] = true
		if owner := string(exts.Get([]byte(k(g.AccountID, g.Extension)))); owner != "group:"+g.ID {
			bad("group %s: extension %s is indexed to %q", key, g.Extension, owner)
		}
		if g.Status != StatusEnabled && g.Status != StatusDisabled || g.Kind != GroupPaging && g.Kind != GroupRing {
			bad("group %s: kind %q status %q", key, g.Kind, g.Status)
		}
		members("group", string(key), g.AccountID, g.Members)
		return nil
	})
	_ = exts.ForEach(func(key, v []byte) error {
		acct, _, _ := strings.Cut(string(key), "/")
		kind, id, _ := strings.Cut(string(v), ":")
		if kind == "queue" && !queues[k(acct, id)] || kind == "group" && !groups[k(acct, id)] {
			bad("extension %s points at missing %s %s", key, kind, id)
		}
		return nil
	})
	callflows := map[string]bool{}
	versions := map[string]string{} // acct/lineage/version → id
	_ = t.Bucket(bCallflows).ForEach(func(key, v []byte) error {
		var cf Callflow
		if err := decode(v, &cf); err != nil {
			bad("callflow %s: %v", key, err)
			return nil
		}
		callflows[string(key)] = true
		vk := k(cf.AccountID, cf.Lineage, strconv.Itoa(cf.Version))
		if other, dup := versions[vk]; dup || cf.Lineage == "" || cf.Version < 1 {
			bad("callflow %s: lineage %q version %d (also %s)", key, cf.Lineage, cf.Version, other)
		}
		versions[vk] = cf.ID
		for i, s := range cf.Steps {
			switch s.Type {
			case StepRing:
				members("callflow", fmt.Sprintf("%s step %d", key, i), cf.AccountID, s.UserIDs)
			case StepQueue:
				if !queues[k(cf.AccountID, s.QueueID)] {
					bad("callflow %s step %d: missing queue %s", key, i, s.QueueID)
				}
			case StepGroup:
				if !groups[k(cf.AccountID, s.GroupID)] {
					bad("callflow %s step %d: missing group %s", key, i, s.GroupID)
				}
			default:
				bad("callflow %s step %d: type %q", key, i, s.Type)
			}
		}
		return nil
	})
	_ = t.Bucket(bNumbers).ForEach(func(key, v []byte) error {
		var n Number
		if err := decode(v, &n); err != nil {
			bad("number %s: %v", key, err)
			return nil
		}
		if owner := string(t.Bucket(bNumberOwners).Get([]byte(n.E164))); owner != n.AccountID {
			bad("number %s: owner index says %q", key, owner)
		}
		open := len(n.History) > 0 && n.History[len(n.History)-1].To == nil
		switch {
		case n.Status == NumberActive && (!callflows[k(n.AccountID, n.CallflowID)] || !open || n.History[len(n.History)-1].CallflowID != n.CallflowID):
			bad("number %s: active on %q, which is missing or not its open history period", key, n.CallflowID)
		case n.Status == NumberAvailable && (n.CallflowID != "" || open):
			bad("number %s: available but routed to %q or with an open period", key, n.CallflowID)
		case n.Status != NumberActive && n.Status != NumberAvailable:
			bad("number %s: status %q", key, n.Status)
		}
		return nil
	})
	_ = t.Bucket(bNumberOwners).ForEach(func(key, v []byte) error {
		if t.Bucket(bNumbers).Get([]byte(k(string(v), string(key)))) == nil {
			bad("number owner %s → %s has no number record", key, v)
		}
		return nil
	})
	_ = t.Bucket(bJobs).ForEach(func(key, v []byte) error {
		var j Job
		if err := decode(v, &j); err != nil {
			bad("job %s: %v", key, err)
		} else if j.State == JobDone && j.next() >= 0 {
			bad("job %s: done with step %s %s", key, j.Steps[j.next()].Name, j.Steps[j.next()].State)
		}
		return nil
	})
	return problems
}
