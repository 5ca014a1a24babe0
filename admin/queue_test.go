package admin

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestQueues(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	viewer := e.token("default", "viewer")
	ada := e.createUser("1002", "Ada Lovelace")
	grace := e.createUser("1003", "Grace Hopper")

	var q queueJSON
	e.call("POST", base+"/queues", admin, map[string]any{"name": "Demo 1", "extension": "600", "members": []string{ada.ID}}, 201, &q)
	want := queueJSON{ID: q.ID, Name: "Demo 1", Extension: "600", Members: []string{ada.ID}, CreatedAt: "2026-11-23T09:00:00Z", UpdatedAt: "2026-11-23T09:00:00Z"}
	if diff := cmp.Diff(want, q); diff != "" || q.ID == "" {
		t.Fatalf("created queue (-want +got):\n%s", diff)
	}
	qPath := base + "/queues/" + q.ID

	// Refusals name the field.
	for body, field := range map[string]string{
		`{"name": "Demo 2", "extension": "1002"}`:                    "extension", // a user has it
		`{"name": "Demo 2", "extension": "600"}`:                     "extension", // the queue has it
		`{"name": "", "extension": "601"}`:                           "name",
		`{"name": "Demo 2", "extension": "601", "members": ["u-x"]}`: "members",
	} {
		if er := e.callErr("POST", base+"/queues", admin, body, 400, "invalid"); er.Error.Field != field {
			t.Errorf("POST %s: field %q, want %q", body, er.Error.Field, field)
		}
	}
	e.callErr("POST", base+"/queues", viewer, `{"name": "Demo 2", "extension": "601"}`, 403, "forbidden")

	// Members: add (twice is a no-op), remove, remove again → 404.
	e.clock.Advance(time.Minute)
	e.call("POST", qPath+"/members", admin, map[string]string{"user_id": grace.ID}, 200, &q)
	e.call("POST", qPath+"/members", admin, map[string]string{"user_id": grace.ID}, 200, &q)
	if diff := cmp.Diff([]string{ada.ID, grace.ID}, q.Members); diff != "" || q.UpdatedAt != "2026-11-23T09:01:00Z" {
		t.Errorf("after add (-want +got):\n%s", diff)
	}
	if er := e.callErr("POST", qPath+"/members", admin, `{"user_id": "u-nobody"}`, 400, "invalid"); er.Error.Field != "user_id" {
		t.Errorf("add unknown user: field %q", er.Error.Field)
	}
	e.call("DELETE", qPath+"/members/"+ada.ID, admin, nil, 200, &q)
	if diff := cmp.Diff([]string{grace.ID}, q.Members); diff != "" {
		t.Errorf("after remove (-want +got):\n%s", diff)
	}
	e.callErr("DELETE", qPath+"/members/"+ada.ID, admin, nil, 404, "not_found")

	// PATCH: left-out fields stay; members replaces the list.
	e.call("PATCH", qPath, admin, `{"name": "Support", "members": []}`, 200, &q)
	if q.Name != "Support" || q.Extension != "600" || q.Members == nil || len(q.Members) != 0 {
		t.Errorf("PATCH = %+v", q)
	}
	e.call("PATCH", qPath, admin, `{}`, 200, &q)
	e.call("GET", qPath, viewer, nil, 200, &q)
	var list queueList
	e.call("GET", base+"/queues", viewer, nil, 200, &list)
	if len(list.Queues) != 1 || list.Queues[0].Name != "Support" {
		t.Errorf("list = %+v", list)
	}

	// A queue a callflow sends calls to cannot go.
	var cf callflowJSON
	e.call("POST", base+"/callflows", admin, map[string]any{"name": "Support line", "steps": []map[string]any{{"type": "queue", "queue_id": q.ID}}}, 201, &cf)
	e.callErr("DELETE", qPath, admin, nil, 409, "queue_in_use")
	e.call("DELETE", base+"/callflows/"+cf.ID, admin, nil, 204, nil)
	e.call("DELETE", qPath, admin, nil, 204, nil)
	e.callErr("GET", qPath, viewer, nil, 404, "not_found")
	// Its extension is free again.
	e.call("POST", base+"/queues", admin, `{"name": "Demo 2", "extension": "600"}`, 201, nil)
}
