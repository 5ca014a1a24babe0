package admin

import (
	"testing"
	"time"
)

func TestNumbers(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	viewer := e.token("default", "viewer")
	ada := e.createUser("1002", "Ada Lovelace")
	var sales, support callflowJSON
	e.call("POST", base+"/callflows", admin, map[string]any{"name": "Sales", "steps": []map[string]any{{"type": "ring", "user_ids": []string{ada.ID}}}}, 201, &sales)
	e.call("POST", base+"/callflows", admin, map[string]any{"name": "Support", "steps": []map[string]any{{"type": "ring", "user_ids": []string{ada.ID}, "timeout_s": 20}}}, 201, &support)

	// Only the provider adds numbers; they start available.
	e.callErr("POST", base+"/numbers", admin, `{"e164": "+442079460000"}`, 403, "forbidden")
	var n numberJSON
	raw := e.call("POST", base+"/numbers", providerSecret, `{"e164": "442079460000"}`, 201, &n)
	if n.E164 != "+442079460000" || n.Status != "available" || n.CallflowID != nil || n.History == nil || len(n.History) != 0 {
		t.Fatalf("added number = %s", raw)
	}
	e.callErr("POST", base+"/numbers", providerSecret, `{"e164": "+442079460000"}`, 409, "exists")
	if er := e.callErr("POST", base+"/numbers", providerSecret, `{"e164": "020 7946 0001"}`, 400, "invalid"); er.Error.Field != "e164" {
		t.Errorf("bad number: field %q", er.Error.Field)
	}
	e.call("POST", base+"/numbers", providerSecret, `{"e164": "+442079460001"}`, 201, nil)

	// Activate: the number routes to the callflow, which becomes ACTIVE.
	e.clock.Advance(time.Minute)
	e.call("POST", base+"/numbers/442079460000/activate", admin, map[string]string{"callflow_id": sales.ID}, 200, &n)
	if n.Status != "active" || n.CallflowID == nil || *n.CallflowID != sales.ID || len(n.History) != 1 ||
		n.History[0].CallflowName != "Sales" || n.History[0].CallflowVersion != 1 || n.History[0].From != "2026-11-23T09:01:00Z" || n.History[0].To != nil {
		t.Errorf("activated = %+v", n)
	}
	e.call("GET", base+"/callflows/"+sales.ID, viewer, nil, 200, &sales)
	if sales.Status != "ACTIVE" || len(sales.Numbers) != 1 || sales.Numbers[0] != "+442079460000" {
		t.Errorf("callflow after activate = %+v", sales)
	}
	e.call("POST", base+"/numbers/+442079460000/activate", admin, map[string]string{"callflow_id": sales.ID}, 200, nil) // same callflow: no-op
	e.callErr("POST", base+"/numbers/+442079460000/activate", admin, map[string]string{"callflow_id": support.ID}, 409, "number_active")
	if er := e.callErr("POST", base+"/numbers/+442079460001/activate", admin, `{"callflow_id": "cf-nope"}`, 400, "invalid"); er.Error.Field != "callflow_id" {
		t.Errorf("unknown callflow: field %q", er.Error.Field)
	}
	e.callErr("POST", base+"/numbers/+449999999999/activate", admin, map[string]string{"callflow_id": sales.ID}, 404, "not_found")
	e.callErr("POST", base+"/numbers/+442079460000/deactivate", viewer, nil, 403, "forbidden")

	// Listing by status.
	for status, want := range map[string]int{"": 2, "active": 1, "available": 1, "AVAILABLE": 1} {
		var list numberList
		e.call("GET", base+"/numbers?status="+status, viewer, nil, 200, &list)
		if len(list.Numbers) != want {
			t.Errorf("status=%s: %d numbers, want %d", status, len(list.Numbers), want)
		}
	}
	if er := e.callErr("GET", base+"/numbers?status=gone", viewer, nil, 400, "invalid"); er.Error.Field != "status" {
		t.Errorf("bad status: field %q", er.Error.Field)
	}

	// An ACTIVE number is never removed, not even by the provider.
	e.callErr("DELETE", base+"/numbers/442079460000", providerSecret, nil, 409, "number_active")

	// Deactivate: available for reuse, history closed, still on the account.
	e.clock.Advance(time.Minute)
	e.call("POST", base+"/numbers/442079460000/deactivate", admin, nil, 200, &n)
	if n.Status != "available" || n.CallflowID != nil || len(n.History) != 1 || n.History[0].To == nil || *n.History[0].To != "2026-11-23T09:02:00Z" {
		t.Errorf("deactivated = %+v", n)
	}
	e.call("GET", base+"/callflows/"+sales.ID, viewer, nil, 200, &sales)
	if sales.Status != "AVAILABLE" || len(sales.Numbers) != 0 {
		t.Errorf("callflow after deactivate = %+v", sales)
	}
	e.call("GET", base+"/numbers/+442079460000", viewer, nil, 200, &n)
	e.callErr("GET", base+"/numbers/abc", viewer, nil, 404, "not_found")

	// The provider may take an AVAILABLE number off the account; an admin may not.
	e.callErr("DELETE", base+"/numbers/442079460000", admin, nil, 403, "forbidden")
	e.call("DELETE", base+"/numbers/442079460000", providerSecret, nil, 204, nil)
	e.callErr("GET", base+"/numbers/442079460000", viewer, nil, 404, "not_found")
}
