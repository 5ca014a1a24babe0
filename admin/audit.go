package admin

import (
	"fmt"
	"strconv"

	"github.com/gin-gonic/gin"
)

// auditJSON is one audit entry. target_label keeps the person or thing
// readable after it is deleted ("1002 Ada Lovelace").
type auditJSON struct {
	Seq         uint64            `json:"seq"`
	Time        string            `json:"time" format:"date-time"`
	Actor       actorJSON         `json:"actor"`
	Action      string            `json:"action"`
	TargetKind  string            `json:"target_kind"`
	TargetID    string            `json:"target_id"`
	TargetLabel string            `json:"target_label"`
	Result      string            `json:"result"`
	Detail      map[string]string `json:"detail,omitempty"`
}

type actorJSON struct {
	TokenID string `json:"token_id,omitempty"`
	Name    string `json:"name"`
	Role    string `json:"role"`
	Source  string `json:"source,omitempty"`
}

// auditList is a page of entries, newest first; next_before (null on the
// last page) is the "before" of the next page.
type auditList struct {
	Entries    []auditJSON `json:"entries"`
	NextBefore *uint64     `json:"next_before"`
}

func (s *server) listAudit(c *gin.Context) error { return s.audit(c, c.Param("account")) }

func (s *server) listProviderAudit(c *gin.Context) error { return s.audit(c, providerAudit) }

func (s *server) audit(c *gin.Context, acct string) error {
	limit, before := 100, uint64(0)
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return errInvalid("limit", "limit must be a whole number from 1 to 1000")
		}
		limit = n
	}
	if v := c.Query("before"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return errInvalid("before", fmt.Sprintf("before must be an entry's seq, not %q", v))
		}
		before = n
	}
	es, err := s.db.Audit(acct, limit, before)
	if err != nil {
		return err
	}
	out := auditList{Entries: make([]auditJSON, 0, len(es))}
	for _, e := range es {
		out.Entries = append(out.Entries, auditJSON{Seq: e.Seq, Time: rfc3339(e.Time),
			Actor:  actorJSON{TokenID: e.Actor.TokenID, Name: e.Actor.Name, Role: e.Actor.Role, Source: e.Actor.Source},
			Action: e.Action, TargetKind: e.TargetKind, TargetID: e.TargetID, TargetLabel: e.TargetLabel,
			Result: e.Result, Detail: e.Detail})
	}
	if len(es) == limit && len(es) > 0 {
		next := es[len(es)-1].Seq
		out.NextBefore = &next
	}
	return reply(c, out)
}
