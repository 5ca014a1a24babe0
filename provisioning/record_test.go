package provisioning

import (
	"log/slog"
	"sync"
	"testing"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
)

var recAdmin = store.Actor{Name: "test-admin", Role: store.RoleAdmin}

// TestRecorder: polls of one device collapse into its latest record; a
// fetch of a different config is never folded into the previous one (each
// new config is audited); with the backlog bound at 2, fetches of five
// devices from many goroutines all end up recorded.
func TestRecorder(t *testing.T) {
	db := storetest.Open(t, nil)
	if _, err := db.CreateAccount("acme", "example.test", recAdmin); err != nil {
		t.Fatal(err)
	}
	macs := []string{"805ec0000001", "805ec0000002", "805ec0000003", "805ec0000004", "805ec0000005"}
	for _, m := range macs {
		if _, err := db.CreateDevice("acme", store.NewDevice{MAC: m, Model: "T54W"}, recAdmin); err != nil {
			t.Fatal(err)
		}
	}
	r := newRecorder(db, slog.New(slog.DiscardHandler))
	r.max = 2
	fetch := func(mac, hash, fw string) store.Fetch {
		return store.Fetch{AccountID: "acme", MAC: mac, Source: "192.0.2.1", UserAgent: "Yealink SIP-T54W " + fw, Firmware: fw, Hash: hash}
	}
	r.add(fetch(macs[0], "aa", "1"))
	r.add(fetch(macs[0], "bb", "2")) // a new config: waits for "aa" rather than replacing it
	for i := range 50 {
		r.add(fetch(macs[0], "bb", string(rune('a'+i%26))))
	}
	r.add(fetch(macs[0], "bb", "last"))
	var wg sync.WaitGroup
	for _, m := range macs[1:] {
		for range 20 {
			wg.Add(1)
			go func() { defer wg.Done(); r.add(fetch(m, "cc", "x")) }()
		}
	}
	wg.Wait()
	r.flush()

	d, err := db.Device("acme", macs[0])
	if err != nil {
		t.Fatal(err)
	}
	if d.LastConfigHash != "bb" || d.LastFirmware != "last" {
		t.Fatalf("device 1 last hash %q firmware %q, want bb and the latest poll's", d.LastConfigHash, d.LastFirmware)
	}
	entries, err := db.Audit("acme", 500, 0)
	if err != nil {
		t.Fatal(err)
	}
	var hashes []string
	for _, e := range entries {
		if e.Action == "device.provisioned" && e.TargetID == macs[0] {
			hashes = append(hashes, e.Detail["config_sha256"])
		}
	}
	if len(hashes) != 2 {
		t.Fatalf("device 1 audited configs %v, want aa and bb", hashes)
	}
	for _, m := range macs[1:] {
		if d, err := db.Device("acme", m); err != nil || d.LastConfigHash != "cc" {
			t.Fatalf("device %s: %v, last hash %q: fetch not recorded", m, err, d.LastConfigHash)
		}
	}
}
