package store_test

import (
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
)

// A data directory written before the binary binding encoding opens, its
// JSON bindings are live, counted and checked, and the next REGISTER that
// writes one stores it in the binary form.
func TestLegacyJSONBindingsStillRead(t *testing.T) {
	clock := storetest.NewClock()
	dir := t.TempDir()
	db := storetest.OpenDir(t, dir, clock)
	mustAccount(t, db)
	u := mustUser(t, db, "1002")
	old := store.Binding{AccountID: u.AccountID, UserID: u.ID, Contact: "sip:1002@192.0.2.7", Source: "192.0.2.7:5062", Transport: "udp",
		UserAgent: "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc", CallID: "c1", CSeq: 1,
		RegisteredAt: clock.Now(), UpdatedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}
	if err := store.PutLegacyBindingForTest(db, old); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = storetest.OpenDir(t, dir, clock)
	if err := db.Check(); err != nil {
		t.Fatalf("Check() = %v", err)
	}
	if n := db.LiveBindings(); n != 1 {
		t.Fatalf("LiveBindings() after reopen = %d, want 1", n)
	}
	bs, err := db.Bindings(u.AccountID, u.ID)
	if err != nil || len(bs) != 1 || bs[0].Contact != old.Contact || !bs[0].ExpiresAt.Equal(old.ExpiresAt) {
		t.Fatalf("Bindings() = %+v, %v", bs, err)
	}
	// Out of order against the JSON row's CSeq: the old row is understood.
	if _, err := db.Register(reg(u, "c1", 1, old.Contact, 600)); err == nil {
		t.Fatal("a repeated CSeq against a JSON row was accepted")
	}
	r := reg(u, "c2", 1, old.Contact, 600)
	r.Source = "192.0.2.8:5062" // a change, written at once
	if _, err := db.Register(r); err != nil {
		t.Fatal(err)
	}
	enc, err := store.BindingEncodingsForTest(db, u.AccountID, u.ID)
	if err != nil || len(enc) != 1 || enc[0] != 2 {
		t.Fatalf("encodings after a REGISTER = %v, %v; want [2]", enc, err)
	}
	if n := db.LiveBindings(); n != 1 {
		t.Fatalf("LiveBindings() = %d, want 1", n)
	}
}
