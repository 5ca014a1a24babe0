package store_test

import (
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
)

func TestCallRecordsSurviveUserDeletion(t *testing.T) {
	clock := storetest.NewClock()
	db := storetest.Open(t, clock)
	mustAccount(t, db)
	u := mustUser(t, db, "1002")
	for i, outcome := range []string{store.OutcomeAnnouncedBusy, store.OutcomeAnswered, store.OutcomeNotFound} {
		clock.Advance(time.Minute)
		if _, err := db.RecordCall(store.CallRecord{AccountID: u.AccountID, From: "1001", To: u.Extension, ToName: u.Name,
			ToUserID: u.ID, Outcome: outcome, Status: []int{486, 200, 404}[i]}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.DisableUser(u.AccountID, u.ID, admin); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteUser(u.AccountID, u.ID, admin); err != nil {
		t.Fatal(err)
	}
	all, err := db.Calls(u.AccountID, store.CallFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(all), 3; got != want {
		t.Fatalf("calls = %d, want %d", got, want)
	}
	if all[0].Outcome != store.OutcomeNotFound || all[2].Outcome != store.OutcomeAnnouncedBusy {
		t.Errorf("calls not newest first: %v, %v", all[0].Outcome, all[2].Outcome)
	}
	if all[2].ToName != "User 1002" || all[2].To != "1002" {
		t.Errorf("record lost the deleted user's name: %+v", all[2])
	}
	page, err := db.Calls(u.AccountID, store.CallFilter{Before: all[0].Seq, Limit: 1})
	if err != nil || len(page) != 1 || page[0].Seq != all[1].Seq {
		t.Fatalf("paging: %+v, %v; want the second newest", page, err)
	}
	busy, err := db.Calls(u.AccountID, store.CallFilter{Outcome: store.OutcomeAnnouncedBusy})
	if err != nil || len(busy) != 1 {
		t.Fatalf("filter by outcome: %d, %v; want 1", len(busy), err)
	}
}

// A cursor walking backwards over a range with no keys ends (an empty
// page is a page): Calls of an account with no call records, on an etcd
// bucket holding nothing below the account's keys, used to fetch the same
// empty range for ever.
func TestEtcdCursorBelowEmptyRange(t *testing.T) {
	if storetest.Backend() != "etcd" {
		t.Skip("etcd only")
	}
	db := storetest.Open(t, storetest.NewClock())
	if _, _, err := db.EnsureAccount("acme", "acme.test"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := db.Calls("acme", store.CallFilter{})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Calls of an account without call records did not return")
	}
}
