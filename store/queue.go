package store

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

var bQueues = []byte("queues") // acct/queue → Queue

// Queue is a call queue: an extension (in the numbering plan users and groups
// share) whose calls ring its members. A member blocks the user's deletion
// (docs/account-model.md rule 2) until removed.
type Queue struct {
	ID        string    `json:"id"`
	AccountID string    `json:"account_id"`
	Name      string    `json:"name"`
	Extension string    `json:"extension"`
	Members   []string  `json:"members"` // user ids, in the order they were added
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Label is how history shows the queue: "600 Demo 1".
func (q Queue) Label() string { return q.Extension + " " + q.Name }

// NewQueue is what a queue create needs.
type NewQueue struct {
	Name      string
	Extension string
	Members   []string
}

// QueuePatch lists the fields of a queue that may change; nil leaves one as it is.
// Members replaces the whole list.
type QueuePatch struct {
	Name      *string
	Extension *string
	Members   *[]string
}

// maxMemberCount bounds a queue's or group's member list.
const maxMemberCount = 1000

// validEntityName is the rule for names of queues, groups and callflows.
func validEntityName(s string) bool {
	return s != "" && utf8.RuneCountInString(s) <= 100 && !strings.ContainsAny(s, "\r\n\x00\"<>")
}

const entityNameRule = "must be 1 to 100 characters, without quotes, angle brackets or line breaks"

// checkMemberIDs validates a member list inside t: every id must be a user of
// the account, listed once. It returns the list (never nil, so JSON shows []).
func (t *tx) checkMemberIDs(acct, field string, ids []string) ([]string, error) {
	if len(ids) > maxMemberCount {
		return nil, invalid(field, fmt.Sprintf("must list at most %d users", maxMemberCount))
	}
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		id = strings.TrimSpace(id)
		if slices.Contains(out, id) {
			return nil, invalid(field, "lists user "+id+" twice")
		}
		if !validID(id) {
			return nil, invalid(field, "must be user ids of this account")
		}
		if _, err := t.user(acct, id); err != nil {
			return nil, invalid(field, "user "+id+" does not exist in this account")
		}
		out = append(out, id)
	}
	return out, nil
}

func trimOpt(s *string) {
	if s != nil {
		*s = strings.TrimSpace(*s)
	}
}

// CreateQueue adds a queue. Its extension must be free in the account and
// every member must be a user of the account (checked in the same transaction).
func (db *DB) CreateQueue(accountID string, n NewQueue, actor Actor) (Queue, error) {
	n.Name = strings.TrimSpace(n.Name)
	n.Extension = strings.TrimSpace(n.Extension)
	p := map[string]string{}
	teamProblems(p, &n.Name, &n.Extension)
	if len(p) > 0 {
		return Queue{}, &ValidationError{Problems: p}
	}
	var q Queue
	err := db.update(func(t *tx) error {
		if _, err := t.account(accountID); err != nil {
			return err
		}
		members, err := t.checkMemberIDs(accountID, "members", n.Members)
		if err != nil {
			return err
		}
		q = Queue{ID: newID("q"), AccountID: accountID, Name: n.Name, Extension: n.Extension, Members: members,
			CreatedAt: t.now, UpdatedAt: t.now}
		if err := t.claimExtension(accountID, q.Extension, "queue:"+q.ID); err != nil {
			return err
		}
		if err := put(t.Bucket(bQueues), k(accountID, q.ID), q); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "queue.create", TargetKind: "queue", TargetID: q.ID, TargetLabel: q.Label(),
			Detail: map[string]string{"members": t.memberLabels(accountID, q.Members)}})
	})
	if err != nil {
		return Queue{}, fmt.Errorf("create queue %s: %w", n.Name, err)
	}
	return q, nil
}

// memberLabels renders user ids as "1002 Ada Lovelace, 1003 …" for audit details.
func (t *tx) memberLabels(acct string, ids []string) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		if u, err := t.user(acct, id); err == nil {
			parts[i] = u.Label()
		} else {
			parts[i] = id
		}
	}
	return strings.Join(parts, ", ")
}

// Queue returns one queue of the account.
func (db *DB) Queue(accountID, id string) (Queue, error) {
	return viewTeam[Queue](db, bQueues, "queue", accountID, id)
}

func (t *tx) queue(acct, id string) (Queue, error) {
	return getTeam[Queue](t, bQueues, "queue", acct, id)
}

// Queues lists the account's queues, ordered by extension.
func (db *DB) Queues(accountID string) ([]Queue, error) {
	return viewTeams[Queue](db, bQueues, accountID)
}

func (t *tx) queues(acct string) ([]Queue, error) { return listTeams[Queue](t, bQueues, acct) }

// UpdateQueue changes a queue's name, extension or member list.
func (db *DB) UpdateQueue(accountID, id string, p QueuePatch, actor Actor) (Queue, error) {
	return updateTeam[Queue](db, bQueues, "queue", accountID, id, teamPatch(p), actor)
}

func (t *tx) saveQueue(q *Queue, actor Actor, action string, detail map[string]string) error {
	return saveTeam(t, bQueues, q, actor, action, detail)
}

// AddQueueMember appends a user to the queue; adding a member twice is a no-op.
func (db *DB) AddQueueMember(accountID, id, userID string, actor Actor) (Queue, error) {
	return addMember[Queue](db, bQueues, "queue", accountID, id, userID, actor)
}

// RemoveQueueMember takes a user out of the queue; ErrNotFound if they are not a member.
func (db *DB) RemoveQueueMember(accountID, id, userID string, actor Actor) (Queue, error) {
	return removeMember[Queue](db, bQueues, "queue", accountID, id, userID, actor)
}

// removeQueueMember drops userID from q (ErrNotFound if not a member), saves
// it and audits why (reason may be "").
func (t *tx) removeQueueMember(q *Queue, userID string, actor Actor, reason string) error {
	detail, err := t.dropTeamMember(q.team(), userID, reason)
	if err != nil {
		return err
	}
	return t.saveQueue(q, actor, "queue.member_remove", detail)
}

// DeleteQueue removes a queue and frees its extension. A queue that a
// callflow version sends calls to is refused with RuleError queue_in_use (
// Detail["callflows"] lists their ids): edit or delete those callflows first.
func (db *DB) DeleteQueue(accountID, id string, actor Actor) error {
	err := db.update(func(t *tx) error {
		q, err := t.queue(accountID, id)
		if err != nil {
			return err
		}
		cfs, err := t.callflowsReferencing(accountID, func(s Step) bool { return s.Type == StepQueue && s.QueueID == id })
		if err != nil {
			return err
		}
		if len(cfs) > 0 {
			return &RuleError{Code: "queue_in_use", Kind: KindConflict,
				Message: fmt.Sprintf("queue %s is used by %d callflow version(s); edit or delete them first", q.Label(), len(cfs)),
				Detail:  map[string]any{"callflows": cfs}}
		}
		if err := t.releaseExtension(accountID, q.Extension, "queue:"+id); err != nil {
			return err
		}
		if err := t.Bucket(bQueues).Delete([]byte(k(accountID, id))); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "queue.delete", TargetKind: "queue", TargetID: id, TargetLabel: q.Label()})
	})
	if err != nil {
		return fmt.Errorf("delete queue %s: %w", id, err)
	}
	return nil
}

// queueUserBlockers is a userBlockerHooks entry: one `queue` blocker per queue
// the user is a member of, ordered by extension.
func queueUserBlockers(t *tx, acct string, u User) ([]Blocker, error) {
	qs, err := t.queues(acct)
	if err != nil {
		return nil, err
	}
	var bs []Blocker
	for _, q := range qs {
		if slices.Contains(q.Members, u.ID) {
			bs = append(bs, Blocker{Kind: "queue", ID: q.ID, Name: q.Name, Detail: "remove the user from the queue"})
		}
	}
	return bs, nil
}
