package admin

import (
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dialtone-voip/dialtone/store"
)

func TestCalls(t *testing.T) {
	e := newEnv(t)
	viewer := e.token("default", "viewer")
	admin := e.token("default", "admin")
	ada := e.createUser("1002", "Ada Lovelace")
	t0 := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	records := []store.CallRecord{
		{From: "1003", FromName: "Grace Hopper", To: "1002", ToName: "Ada Lovelace", ToUserID: ada.ID, Outcome: store.OutcomeAnswered, Status: 200, Duration: 95 * time.Second},
		{From: "1003", To: "1002", ToName: "Ada Lovelace", ToUserID: ada.ID, Outcome: store.OutcomeAnnouncedBusy, Status: 486},
		{From: "+441632960000", To: "+442079460000", Outcome: store.OutcomeNotFound, Status: 404},
		{From: "1004", To: "1002", ToUserID: ada.ID, Outcome: store.OutcomeUnavailable, Status: 480},
	}
	for i, r := range records {
		r.AccountID, r.CallID, r.Source, r.Transport = "default", "c"+strconv.Itoa(i), "192.0.2.9:5060", "udp"
		r.StartedAt = t0.Add(time.Duration(i) * time.Minute)
		r.EndedAt = r.StartedAt.Add(r.Duration)
		if _, err := e.db.RecordCall(r); err != nil {
			t.Fatal(err)
		}
	}
	// Another account's calls never show.
	if _, err := e.db.CreateAccount("other", "other.test", store.System); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.RecordCall(store.CallRecord{AccountID: "other", From: "1002", To: "1002", Outcome: store.OutcomeAnswered}); err != nil {
		t.Fatal(err)
	}

	list := func(query string) ([]string, *uint64) {
		t.Helper()
		var out callList
		e.call("GET", base+"/calls"+query, viewer, nil, 200, &out)
		var ids []string
		for _, c := range out.Calls {
			ids = append(ids, c.CallID)
		}
		return ids, out.NextBefore
	}
	ids, next := list("")
	if diff := cmp.Diff([]string{"c3", "c2", "c1", "c0"}, ids); diff != "" || next != nil {
		t.Errorf("all calls, newest first (-want +got):\n%s (next %v)", diff, next)
	}
	for query, want := range map[string][]string{
		"?outcome=announced_busy":                                {"c1"},
		"?extension=1002":                                        {"c3", "c1", "c0"},
		"?extension=1003&outcome=answered":                       {"c0"},
		"?since=2026-11-23T08:02:00Z":                            {"c3", "c2"},
		"?until=2026-11-23T08:02:00Z":                            {"c1", "c0"},
		"?since=2026-11-23T08:01:00Z&until=2026-11-23T08:03:00Z": {"c2", "c1"},
		"?extension=%2B442079460000":                             {"c2"},
		"?outcome=cancelled":                                     nil,
	} {
		if got, _ := list(query); !cmp.Equal(want, got) {
			t.Errorf("GET /calls%s = %v, want %v", query, got, want)
		}
	}

	// Paging: next_before leads to the next page; the last page has null.
	page1, next := list("?limit=3")
	if !cmp.Equal(page1, []string{"c3", "c2", "c1"}) || next == nil {
		t.Fatalf("page 1 = %v, next %v", page1, next)
	}
	page2, next2 := list("?limit=3&before=" + strconv.FormatUint(*next, 10))
	if !cmp.Equal(page2, []string{"c0"}) || next2 != nil {
		t.Errorf("page 2 = %v, next %v", page2, next2)
	}

	// One record in full: names kept, ids null when the party is no user.
	var out callList
	e.call("GET", base+"/calls?outcome=answered", viewer, nil, 200, &out)
	c := out.Calls[0]
	if c.From != "1003" || c.FromName != "Grace Hopper" || c.FromUserID != nil || c.ToUserID == nil || *c.ToUserID != ada.ID ||
		c.DurationMS != 95000 || c.Status != 200 || c.StartedAt != "2026-11-23T08:00:00Z" || c.EndedAt != "2026-11-23T08:01:35Z" || c.ID == "" {
		t.Errorf("answered call = %+v", c)
	}

	for query, field := range map[string]string{
		"?outcome=maybe": "outcome", "?since=yesterday": "since", "?until=1": "until",
		"?before=x": "before", "?limit=0": "limit", "?limit=1001": "limit",
	} {
		if er := e.callErr("GET", base+"/calls"+query, viewer, nil, 400, "invalid"); er.Error.Field != field {
			t.Errorf("GET /calls%s: field %q, want %q", query, er.Error.Field, field)
		}
	}

	// Records outlive the users they name.
	e.call("POST", base+"/users/"+ada.ID+"/disable", admin, nil, 200, nil)
	e.call("DELETE", base+"/users/"+ada.ID, admin, nil, 204, nil)
	e.call("GET", base+"/calls?outcome=answered", viewer, nil, 200, &out)
	if len(out.Calls) != 1 || out.Calls[0].ToName != "Ada Lovelace" {
		t.Errorf("after the user's deletion = %+v", out.Calls)
	}
}
