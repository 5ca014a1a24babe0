package admin

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/store"
)

// callJSON is one INVITE dialtone handled. from/to are extensions, numbers or
// URIs, and the names are kept, so a record still reads after the users are
// deleted; the *_user_id fields are null when the party was not a user.
type callJSON struct {
	ID         string  `json:"id"`
	Seq        uint64  `json:"seq"`
	StartedAt  string  `json:"started_at" format:"date-time"`
	EndedAt    string  `json:"ended_at" format:"date-time"`
	DurationMS int64   `json:"duration_ms"`
	CallID     string  `json:"call_id"`
	From       string  `json:"from"`
	FromName   string  `json:"from_name"`
	FromUserID *string `json:"from_user_id"`
	To         string  `json:"to"`
	ToName     string  `json:"to_name"`
	ToUserID   *string `json:"to_user_id"`
	Outcome    string  `json:"outcome"`
	Status     int     `json:"status"`
	Source     string  `json:"source"`
	Transport  string  `json:"transport"`
	Detail     string  `json:"detail,omitempty"`
}

// callList is a page of records, newest first; next_before (null on the
// last page) is the "before" of the next page.
type callList struct {
	Calls      []callJSON `json:"calls"`
	NextBefore *uint64    `json:"next_before"`
}

var callOutcomes = []string{store.OutcomeAnnouncedBusy, store.OutcomeRouted, store.OutcomeAnswered, store.OutcomeUnavailable,
	store.OutcomeNotFound, store.OutcomeForbidden, store.OutcomeCancelled, store.OutcomeBusy, store.OutcomeFailed}

func callOut(r store.CallRecord) callJSON {
	// Times keep sub-second precision here: calls are often shorter than a second.
	return callJSON{ID: r.ID, Seq: r.Seq, StartedAt: r.StartedAt.UTC().Format(time.RFC3339Nano), EndedAt: r.EndedAt.UTC().Format(time.RFC3339Nano),
		DurationMS: r.Duration.Milliseconds(), CallID: r.CallID,
		From: r.From, FromName: r.FromName, FromUserID: optString(r.FromUserID),
		To: r.To, ToName: r.ToName, ToUserID: optString(r.ToUserID),
		Outcome: r.Outcome, Status: r.Status, Source: r.Source, Transport: r.Transport, Detail: r.Detail}
}

// callFilter reads GET /calls's query: outcome, extension (caller or
// callee), since/until (RFC 3339; since inclusive, until exclusive), before
// (a record's seq, for paging) and limit (1 to 1000, default 100).
func callFilter(c *gin.Context) (store.CallFilter, error) {
	f := store.CallFilter{Limit: 100}
	if v := c.Query("outcome"); v != "" {
		if !slices.Contains(callOutcomes, v) {
			return f, errInvalid("outcome", fmt.Sprintf("outcome must be one of %v", callOutcomes))
		}
		f.Outcome = v
	}
	if v := c.Query("extension"); v != "" {
		if len(v) > 256 {
			return f, errInvalid("extension", "extension is too long")
		}
		f.Extension = v
	}
	for _, p := range []struct {
		name string
		to   *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := c.Query(p.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return f, errInvalid(p.name, p.name+" must be an RFC 3339 time, e.g. 2026-11-23T10:00:00Z")
			}
			*p.to = t
		}
	}
	if v := c.Query("before"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			return f, errInvalid("before", fmt.Sprintf("before must be a call's seq, not %q", v))
		}
		f.Before = n
	}
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return f, errInvalid("limit", "limit must be a whole number from 1 to 1000")
		}
		f.Limit = n
	}
	return f, nil
}

func (s *server) listCalls(c *gin.Context) error {
	f, err := callFilter(c)
	if err != nil {
		return err
	}
	rs, err := s.db.Calls(c.Param("account"), f)
	if err != nil {
		return err
	}
	out := callList{Calls: make([]callJSON, 0, len(rs))}
	for _, r := range rs {
		out.Calls = append(out.Calls, callOut(r))
	}
	if len(rs) == f.Limit {
		next := rs[len(rs)-1].Seq
		out.NextBefore = &next
	}
	return reply(c, out)
}
