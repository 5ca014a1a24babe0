package store

import (
	"fmt"
	"slices"
	"sort"
	"time"
)

// team is what queues and groups share, as their common rules see it: a
// name, an extension in the account's numbering plan, and an ordered list of
// member user ids. The pointers reach into the Queue or Group being changed.
type team struct {
	kind     string // "queue" or "group": the extension owner prefix and the word in messages
	acct, id string
	name     *string
	ext      *string
	members  *[]string
	updated  *time.Time
}

func (q *Queue) team() team {
	return team{kind: "queue", acct: q.AccountID, id: q.ID, name: &q.Name, ext: &q.Extension, members: &q.Members, updated: &q.UpdatedAt}
}

func (g *Group) team() team {
	return team{kind: "group", acct: g.AccountID, id: g.ID, name: &g.Name, ext: &g.Extension, members: &g.Members, updated: &g.UpdatedAt}
}

// teamProblems checks a name and an extension (nil: not given) and adds what
// is wrong to p, by field.
func teamProblems(p map[string]string, name, ext *string) {
	if name != nil && !validEntityName(*name) {
		p["name"] = entityNameRule
	}
	if ext != nil && !validExtension(*ext) {
		p["extension"] = extensionRule
	}
}

// patch applies a change of name, extension or members (nil: unchanged)
// inside t: a new extension must be free, new members must be users of the
// account. It returns the audit detail of what changed.
func (t *tx) patchTeam(tm team, name, ext *string, members *[]string) (map[string]string, error) {
	detail := map[string]string{}
	if name != nil {
		*tm.name = *name
		detail["name"] = *name
	}
	if ext != nil && *ext != *tm.ext {
		owner := tm.kind + ":" + tm.id
		if err := t.claimExtension(tm.acct, *ext, owner); err != nil {
			return nil, err
		}
		if err := t.releaseExtension(tm.acct, *tm.ext, owner); err != nil {
			return nil, err
		}
		detail["extension"] = *tm.ext + " → " + *ext
		*tm.ext = *ext
	}
	if members != nil {
		ids, err := t.checkMemberIDs(tm.acct, "members", *members)
		if err != nil {
			return nil, err
		}
		*tm.members = ids
		detail["members"] = t.memberLabels(tm.acct, ids)
	}
	return detail, nil
}

// addTeamMember appends userID to the members. added is false (and nothing
// changes) when they already are one. The detail is for the audit entry.
func (t *tx) addTeamMember(tm team, userID string) (detail map[string]string, added bool, err error) {
	u, err := t.user(tm.acct, userID)
	if err != nil {
		return nil, false, invalid("user_id", "must be a user of this account")
	}
	if slices.Contains(*tm.members, userID) {
		return nil, false, nil
	}
	if len(*tm.members) >= maxMemberCount {
		return nil, false, invalid("user_id", fmt.Sprintf("the %s already has %d members", tm.kind, maxMemberCount))
	}
	*tm.members = append(*tm.members, userID)
	return map[string]string{"user": u.Label(), "user_id": userID}, true, nil
}

// dropTeamMember takes userID out of the members (ErrNotFound if they are not
// one) and returns the detail for the audit entry, with reason if given.
func (t *tx) dropTeamMember(tm team, userID, reason string) (map[string]string, error) {
	if !slices.Contains(*tm.members, userID) {
		return nil, fmt.Errorf("member %s: %w", userID, ErrNotFound)
	}
	*tm.members = slices.DeleteFunc(*tm.members, func(m string) bool { return m == userID })
	detail := map[string]string{"user": t.memberLabels(tm.acct, []string{userID}), "user_id": userID}
	if reason != "" {
		detail["reason"] = reason
	}
	return detail, nil
}

// A teamRecord is a Group or a Queue, as the operations below handle both:
// one copy of reading, listing, patching and member changes for the two.
type teamRecord[T any] interface {
	*T
	team() team
	Label() string
}

// teamPatch is GroupPatch and QueuePatch: nil leaves a field as it is.
type teamPatch struct {
	Name      *string
	Extension *string
	Members   *[]string
}

// getTeam reads one record of kind from bucket.
func getTeam[T any, P teamRecord[T]](t *tx, bucket []byte, kind, acct, id string) (T, error) {
	var v T
	if err := get(t.Bucket(bucket), k(acct, id), &v); err != nil {
		var zero T
		return zero, fmt.Errorf("%s %s: %w", kind, id, err)
	}
	return v, nil
}

// listTeams reads the account's records from bucket, ordered by extension.
func listTeams[T any, P teamRecord[T]](t *tx, bucket []byte, acct string) ([]T, error) {
	var out []T
	err := each(t.Bucket(bucket), acct, func(_, v []byte) error {
		var x T
		if err := decode(v, &x); err != nil {
			return err
		}
		out = append(out, x)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return *P(&out[i]).team().ext < *P(&out[j]).team().ext })
	return out, err
}

// saveTeam stamps and writes a changed record and audits action ("group.update", …).
func saveTeam[T any, P teamRecord[T]](t *tx, bucket []byte, v P, actor Actor, action string, detail map[string]string) error {
	tm := v.team()
	*tm.updated = t.now
	if err := put(t.Bucket(bucket), k(tm.acct, tm.id), *v); err != nil {
		return err
	}
	return t.audit(AuditEntry{AccountID: tm.acct, Actor: actor, Action: action, TargetKind: tm.kind, TargetID: tm.id, TargetLabel: v.Label(), Detail: detail})
}

// viewTeam and viewTeams are the read-only DB methods of both kinds.
func viewTeam[T any, P teamRecord[T]](db *DB, bucket []byte, kind, acct, id string) (T, error) {
	var v T
	err := db.view(func(t *tx) error {
		var err error
		v, err = getTeam[T, P](t, bucket, kind, acct, id)
		return err
	})
	return v, err
}

func viewTeams[T any, P teamRecord[T]](db *DB, bucket []byte, acct string) ([]T, error) {
	var out []T
	err := db.view(func(t *tx) error {
		if _, err := t.account(acct); err != nil {
			return err
		}
		var err error
		out, err = listTeams[T, P](t, bucket, acct)
		return err
	})
	return out, err
}

// changeTeam reads one record in a write transaction, lets change edit it
// and, unless change reports no change (action ""), saves and audits it.
// what names the operation in the error ("update group g-1").
func changeTeam[T any, P teamRecord[T]](db *DB, bucket []byte, kind, acct, id, what string, actor Actor,
	change func(t *tx, v P) (action string, detail map[string]string, err error)) (T, error) {
	var v T
	err := db.update(func(t *tx) error {
		var err error
		if v, err = getTeam[T, P](t, bucket, kind, acct, id); err != nil {
			return err
		}
		action, detail, err := change(t, &v)
		if err != nil || action == "" {
			return err
		}
		return saveTeam[T, P](t, bucket, &v, actor, action, detail)
	})
	if err != nil {
		var zero T
		return zero, fmt.Errorf("%s: %w", what, err)
	}
	return v, nil
}

// updateTeam applies a patch (name, extension, members) to one record.
func updateTeam[T any, P teamRecord[T]](db *DB, bucket []byte, kind, acct, id string, p teamPatch, actor Actor) (T, error) {
	trimOpt(p.Name)
	trimOpt(p.Extension)
	probs := map[string]string{}
	teamProblems(probs, p.Name, p.Extension)
	if len(probs) > 0 {
		var zero T
		return zero, &ValidationError{Problems: probs}
	}
	return changeTeam[T, P](db, bucket, kind, acct, id, "update "+kind+" "+id, actor, func(t *tx, v P) (string, map[string]string, error) {
		detail, err := t.patchTeam(v.team(), p.Name, p.Extension, p.Members)
		return kind + ".update", detail, err
	})
}

// addMember appends a user to one record; adding a member twice is a no-op.
func addMember[T any, P teamRecord[T]](db *DB, bucket []byte, kind, acct, id, userID string, actor Actor) (T, error) {
	return changeTeam[T, P](db, bucket, kind, acct, id, "add member "+userID+" to "+kind+" "+id, actor, func(t *tx, v P) (string, map[string]string, error) {
		detail, added, err := t.addTeamMember(v.team(), userID)
		if err != nil || !added {
			return "", nil, err
		}
		return kind + ".member_add", detail, nil
	})
}

// removeMember takes a user out of one record; ErrNotFound if not a member.
func removeMember[T any, P teamRecord[T]](db *DB, bucket []byte, kind, acct, id, userID string, actor Actor) (T, error) {
	return changeTeam[T, P](db, bucket, kind, acct, id, "remove member "+userID+" from "+kind+" "+id, actor, func(t *tx, v P) (string, map[string]string, error) {
		detail, err := t.dropTeamMember(v.team(), userID, "")
		return kind + ".member_remove", detail, err
	})
}
