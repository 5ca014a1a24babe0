package store

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

var bGroups = []byte("groups") // acct/group → Group

// Group kinds.
const (
	GroupPaging = "paging"
	GroupRing   = "ring"
)

// Group is a paging or ring group: an extension that rings (or pages) its
// members. Status is StatusEnabled or StatusDisabled; a disabled group's
// extension behaves like a disabled user to callers (announcement + busy).
// Membership never blocks a user's deletion: deleting a user removes them
// from every group and the audit log records it.
type Group struct {
	ID        string    `json:"id"`
	AccountID string    `json:"account_id"`
	Kind      string    `json:"kind"`
	Name      string    `json:"name"`
	Extension string    `json:"extension"`
	Members   []string  `json:"members"` // user ids, in the order they were added
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Label is how history shows the group: "700 Warehouse".
func (g Group) Label() string { return g.Extension + " " + g.Name }

// NewGroup is what a group create needs.
type NewGroup struct {
	Kind      string
	Name      string
	Extension string
	Members   []string
}

// GroupPatch lists the fields of a group that may change (not its kind); nil
// leaves one as it is. Members replaces the whole list.
type GroupPatch struct {
	Name      *string
	Extension *string
	Members   *[]string
}

// CreateGroup adds an enabled group. Kind is "paging" or "ring"; the extension
// must be free; members must be users of the account.
func (db *DB) CreateGroup(accountID string, n NewGroup, actor Actor) (Group, error) {
	n.Kind = strings.ToLower(strings.TrimSpace(n.Kind))
	n.Name = strings.TrimSpace(n.Name)
	n.Extension = strings.TrimSpace(n.Extension)
	p := map[string]string{}
	if n.Kind != GroupPaging && n.Kind != GroupRing {
		p["kind"] = `must be "paging" or "ring"`
	}
	teamProblems(p, &n.Name, &n.Extension)
	if len(p) > 0 {
		return Group{}, &ValidationError{Problems: p}
	}
	var g Group
	err := db.update(func(t *tx) error {
		if _, err := t.account(accountID); err != nil {
			return err
		}
		members, err := t.checkMemberIDs(accountID, "members", n.Members)
		if err != nil {
			return err
		}
		g = Group{ID: newID("g"), AccountID: accountID, Kind: n.Kind, Name: n.Name, Extension: n.Extension, Members: members,
			Status: StatusEnabled, CreatedAt: t.now, UpdatedAt: t.now}
		if err := t.claimExtension(accountID, g.Extension, "group:"+g.ID); err != nil {
			return err
		}
		if err := put(t.Bucket(bGroups), k(accountID, g.ID), g); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "group.create", TargetKind: "group", TargetID: g.ID, TargetLabel: g.Label(),
			Detail: map[string]string{"kind": g.Kind, "members": t.memberLabels(accountID, g.Members)}})
	})
	if err != nil {
		return Group{}, fmt.Errorf("create group %s: %w", n.Name, err)
	}
	return g, nil
}

// Group returns one group of the account.
func (db *DB) Group(accountID, id string) (Group, error) {
	return viewTeam[Group](db, bGroups, "group", accountID, id)
}

func (t *tx) group(acct, id string) (Group, error) {
	return getTeam[Group](t, bGroups, "group", acct, id)
}

// Groups lists the account's groups, ordered by extension.
func (db *DB) Groups(accountID string) ([]Group, error) {
	return viewTeams[Group](db, bGroups, accountID)
}

func (t *tx) groups(acct string) ([]Group, error) { return listTeams[Group](t, bGroups, acct) }

// UpdateGroup changes a group's name, extension or member list.
func (db *DB) UpdateGroup(accountID, id string, p GroupPatch, actor Actor) (Group, error) {
	return updateTeam[Group](db, bGroups, "group", accountID, id, teamPatch(p), actor)
}

func (t *tx) saveGroup(g *Group, actor Actor, action string, detail map[string]string) error {
	return saveTeam(t, bGroups, g, actor, action, detail)
}

// AddGroupMember appends a user to the group; adding a member twice is a no-op.
func (db *DB) AddGroupMember(accountID, id, userID string, actor Actor) (Group, error) {
	return addMember[Group](db, bGroups, "group", accountID, id, userID, actor)
}

// RemoveGroupMember takes a user out of the group; ErrNotFound if they are not a member.
func (db *DB) RemoveGroupMember(accountID, id, userID string, actor Actor) (Group, error) {
	return removeMember[Group](db, bGroups, "group", accountID, id, userID, actor)
}

// DisableGroup disables a group (docs/account-model.md rule 11); callers to it
// hear the announcement.
func (db *DB) DisableGroup(accountID, id string, actor Actor) (Group, error) {
	return db.setGroupStatus(accountID, id, StatusDisabled, actor)
}

// EnableGroup re-enables a disabled group exactly as it was.
func (db *DB) EnableGroup(accountID, id string, actor Actor) (Group, error) {
	return db.setGroupStatus(accountID, id, StatusEnabled, actor)
}

func (db *DB) setGroupStatus(accountID, id, status string, actor Actor) (Group, error) {
	var g Group
	err := db.update(func(t *tx) error {
		var err error
		if g, err = t.group(accountID, id); err != nil {
			return err
		}
		if g.Status == status {
			return nil
		}
		g.Status = status
		action := "group.enable"
		if status == StatusDisabled {
			action = "group.disable"
		}
		return t.saveGroup(&g, actor, action, nil)
	})
	if err != nil {
		return Group{}, fmt.Errorf("%s group %s: %w", strings.TrimSuffix(status, "d"), id, err)
	}
	return g, nil
}

// DeleteGroup removes a disabled group and frees its extension. An enabled
// group is refused with RuleError group_enabled; a group that a callflow
// version sends calls to, with RuleError group_in_use (
// Detail["callflows"] lists their ids).
func (db *DB) DeleteGroup(accountID, id string, actor Actor) error {
	err := db.update(func(t *tx) error {
		g, err := t.group(accountID, id)
		if err != nil {
			return err
		}
		if g.Status != StatusDisabled {
			return &RuleError{Code: "group_enabled", Kind: KindConflict,
				Message: fmt.Sprintf("group %s is enabled; disable it before deleting it", g.Label())}
		}
		cfs, err := t.callflowsReferencing(accountID, func(s Step) bool { return s.Type == StepGroup && s.GroupID == id })
		if err != nil {
			return err
		}
		if len(cfs) > 0 {
			return &RuleError{Code: "group_in_use", Kind: KindConflict,
				Message: fmt.Sprintf("group %s is used by %d callflow version(s); edit or delete them first", g.Label(), len(cfs)),
				Detail:  map[string]any{"callflows": cfs}}
		}
		if err := t.releaseExtension(accountID, g.Extension, "group:"+id); err != nil {
			return err
		}
		if err := t.Bucket(bGroups).Delete([]byte(k(accountID, id))); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "group.delete", TargetKind: "group", TargetID: id, TargetLabel: g.Label()})
	})
	if err != nil {
		return fmt.Errorf("delete group %s: %w", id, err)
	}
	return nil
}

// removeFromGroups takes userID out of every group of the account, auditing
// each removal with reason; it returns the groups changed.
func (t *tx) removeFromGroups(acct, userID string, actor Actor, reason string) ([]Group, error) {
	gs, err := t.groups(acct)
	if err != nil {
		return nil, err
	}
	var changed []Group
	for _, g := range gs {
		if !slices.Contains(g.Members, userID) {
			continue
		}
		detail, err := t.dropTeamMember(g.team(), userID, reason)
		if err != nil {
			return nil, err
		}
		if err := t.saveGroup(&g, actor, "group.member_remove", detail); err != nil {
			return nil, err
		}
		changed = append(changed, g)
	}
	return changed, nil
}

// groupUserDelete is a userDeleteHooks entry: a deleted user leaves every
// group, each removal audited.
func groupUserDelete(t *tx, acct string, u User, actor Actor) error {
	_, err := t.removeFromGroups(acct, u.ID, actor, "user deleted")
	return err
}
