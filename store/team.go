package store

import (
	"fmt"
	"slices"
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
}

func (q *Queue) team() team {
	return team{kind: "queue", acct: q.AccountID, id: q.ID, name: &q.Name, ext: &q.Extension, members: &q.Members}
}

func (g *Group) team() team {
	return team{kind: "group", acct: g.AccountID, id: g.ID, name: &g.Name, ext: &g.Extension, members: &g.Members}
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
