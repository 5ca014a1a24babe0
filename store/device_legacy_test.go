package store

import (
	"errors"
	"path/filepath"
	"testing"
)

// TestLegacyDeviceRecords: a data file written before MAC claims were per
// account (index mac → acct) and before devices had their own provisioning
// credentials keeps working, and is converted as it is touched.
func TestLegacyDeviceRecords(t *testing.T) {
	db, err := openTest(filepath.Join(t.TempDir(), "data"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	actor := Actor{Name: "test", Role: RoleProvider}
	for _, a := range []string{"a", "b"} {
		if _, err := db.CreateAccount(a, a+".example.test", actor); err != nil {
			t.Fatal(err)
		}
	}
	const mac = "805ec0aabbcc"
	if _, err := db.CreateDevice("a", NewDevice{MAC: mac, Model: "T54W"}, actor); err != nil {
		t.Fatal(err)
	}
	// Rewrite it the way an older build stored it.
	if err := db.update(func(t *tx) error {
		rec, err := t.deviceRecord("a", mac)
		if err != nil {
			return err
		}
		if err := put(t.Bucket(bDevices), k("a", mac), rec.Device); err != nil {
			return err
		}
		if err := t.Bucket(bDeviceMACs).Delete([]byte(k(mac, "a"))); err != nil {
			return err
		}
		return t.Bucket(bDeviceMACs).Put([]byte(mac), []byte("a"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Check(); err != nil {
		t.Fatalf("Check of a legacy file = %v", err)
	}
	if d, err := db.DeviceByMAC(mac); err != nil || d.AccountID != "a" {
		t.Fatalf("DeviceByMAC (legacy index) = %+v, %v", d, err)
	}
	if err := db.RecordFetch(Fetch{MAC: mac, Source: "192.0.2.7", Hash: "h"}); err != nil {
		t.Fatalf("RecordFetch without an account (legacy index) = %v", err)
	}
	c, err := db.DeviceConfig("a", mac)
	if err != nil || c.Credentials.Username != "" || len(c.Credentials.Passwords()) != 0 {
		t.Fatalf("legacy device config = %v %v, %v; want no credentials yet", c, c.Credentials, err)
	}
	if err := db.EnsureDeviceCredentials("a", mac); err != nil {
		t.Fatal(err)
	}
	_, cr, err := db.DeviceAuth("a", mac)
	if err != nil || cr.Username == "" || cr.Password == "" {
		t.Fatalf("after EnsureDeviceCredentials: %v, %v", cr, err)
	}
	if err := db.EnsureDeviceCredentials("a", mac); err != nil {
		t.Fatal(err)
	}
	if _, again, _ := db.DeviceAuth("a", mac); again.Password != cr.Password {
		t.Fatal("EnsureDeviceCredentials replaced existing credentials")
	}
	// Another account's claim converts the legacy entry.
	if _, err := db.CreateDevice("b", NewDevice{MAC: mac, Model: "T46U"}, actor); err != nil {
		t.Fatal(err)
	}
	claims, err := db.MACClaims(mac)
	if err != nil || len(claims) != 1 || len(claims[0].Accounts) != 2 {
		t.Fatalf("MACClaims = %+v, %v", claims, err)
	}
	if err := db.view(func(t *tx) error {
		if t.Bucket(bDeviceMACs).Get([]byte(mac)) != nil {
			return errLegacyLeft
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteDevice("a", mac, actor); err != nil {
		t.Fatal(err)
	}
	if err := db.Check(); err != nil {
		t.Fatalf("Check = %v", err)
	}
}

var errLegacyLeft = errors.New("legacy index entry left after conversion")
