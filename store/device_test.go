package store_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
)

var devOps = store.Actor{Name: "devops", Role: store.RoleAdmin}

// devFixture is a store with two accounts, each with one user.
type devFixture struct {
	db       *store.DB
	clock    *storetest.Clock
	ada, bob store.User // ada in "a", bob in "b"
}

func newDevFixture(t *testing.T) devFixture {
	t.Helper()
	f := devFixture{clock: storetest.NewClock()}
	f.db = storetest.Open(t, f.clock)
	for _, a := range []struct{ id, domain string }{{"a", "a.example.test"}, {"b", "b.example.test"}} {
		if _, err := f.db.CreateAccount(a.id, a.domain, devOps); err != nil {
			t.Fatalf("CreateAccount(%s) = %v", a.id, err)
		}
	}
	var err error
	if f.ada, err = f.db.CreateUser("a", store.NewUser{Extension: "1001", Name: "Ada Lovelace"}, devOps); err != nil {
		t.Fatal(err)
	}
	if f.bob, err = f.db.CreateUser("b", store.NewUser{Extension: "1001", Name: "Bob"}, devOps); err != nil {
		t.Fatal(err)
	}
	return f
}

func wantField(t *testing.T, err error, field string) {
	t.Helper()
	var ve *store.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want *ValidationError naming %q", err, field)
	}
	if _, ok := ve.Problems[field]; !ok {
		t.Fatalf("ValidationError = %v, want a problem with %q", ve.Problems, field)
	}
}

func TestCreateDeviceValidation(t *testing.T) {
	f := newDevFixture(t)
	line1 := []store.DeviceLine{{Line: 1, UserID: f.ada.ID}}
	tests := []struct {
		name  string
		in    store.NewDevice
		field string
	}{
		{"BadMAC", store.NewDevice{MAC: "805ec0aabbc", Model: "T54W"}, "mac"},
		{"ThirteenDigits", store.NewDevice{MAC: "805ec0aabbccd", Model: "T54W"}, "mac"},
		{"NotHex", store.NewDevice{MAC: "805ec0aabbzz", Model: "T54W"}, "mac"},
		{"UnknownModel", store.NewDevice{MAC: "805ec0aabbcc", Model: "T99X"}, "model"},
		{"LineBeyondModel", store.NewDevice{MAC: "805ec0aabbcc", Model: "T31G", Lines: []store.DeviceLine{{Line: 3, UserID: f.ada.ID}}}, "lines"},
		{"LineZero", store.NewDevice{MAC: "805ec0aabbcc", Model: "T54W", Lines: []store.DeviceLine{{Line: 0, UserID: f.ada.ID}}}, "lines"},
		{"LineTwice", store.NewDevice{MAC: "805ec0aabbcc", Model: "T54W", Lines: append(line1, line1...)}, "lines"},
		{"UnknownUser", store.NewDevice{MAC: "805ec0aabbcc", Model: "T54W", Lines: []store.DeviceLine{{Line: 1, UserID: "u-nobody"}}}, "lines"},
		{"OtherAccountsUser", store.NewDevice{MAC: "805ec0aabbcc", Model: "T54W", Lines: []store.DeviceLine{{Line: 1, UserID: f.bob.ID}}}, "lines"},
		{"LabelNewline", store.NewDevice{MAC: "805ec0aabbcc", Model: "T54W", Label: "a\nb"}, "label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.db.CreateDevice("a", tt.in, devOps)
			wantField(t, err, tt.field)
		})
	}
	if ds, _ := f.db.Devices("a"); len(ds) != 0 {
		t.Fatalf("refused creates left %d devices", len(ds))
	}
}

func TestCreateDeviceNormalises(t *testing.T) {
	f := newDevFixture(t)
	d, err := f.db.CreateDevice("a", store.NewDevice{MAC: "80:5E:C0:AA:BB:CC", Model: "sip-t54w", Label: " desk ",
		Lines: []store.DeviceLine{{Line: 2, UserID: f.ada.ID}}}, devOps)
	if err != nil {
		t.Fatalf("CreateDevice = %v", err)
	}
	if d.MAC != "805ec0aabbcc" || d.Model != "T54W" || d.Label != "desk" {
		t.Fatalf("device = %+v, want mac 805ec0aabbcc, model T54W, label desk", d)
	}
	got, err := f.db.Device("a", "80-5E-C0-AA-BB-CC")
	if err != nil || got.MAC != d.MAC || len(got.Lines) != 1 || got.Lines[0].Line != 2 {
		t.Fatalf("Device = %+v, %v", got, err)
	}
	if got, err := f.db.DeviceByMAC("805ec0aabbcc"); err != nil || got.AccountID != "a" {
		t.Fatalf("DeviceByMAC = %+v, %v; want account a", got, err)
	}
	if _, err := f.db.Device("b", "805ec0aabbcc"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Device from account b = %v, want ErrNotFound", err)
	}
}

// TestMACClaimsPerAccount: adding a MAC another account has succeeds (no
// "already exists" oracle), each account gets its own device, and the
// provider's view lists the MAC with both accounts (docs/provisioning.md).
func TestMACClaimsPerAccount(t *testing.T) {
	f := newDevFixture(t)
	if _, err := f.db.CreateDevice("a", store.NewDevice{MAC: "805ec0aabbcc", Model: "T54W"}, devOps); err != nil {
		t.Fatal(err)
	}
	db, err := f.db.CreateDevice("b", store.NewDevice{MAC: "80:5e:c0:aa:bb:cc", Model: "T46U"}, devOps)
	if err != nil {
		t.Fatalf("the same MAC in another account = %v, want it added (no cross-account answer)", err)
	}
	if db.AccountID != "b" || db.Model != "T46U" {
		t.Fatalf("device = %+v", db)
	}
	_, err = f.db.CreateDevice("a", store.NewDevice{MAC: "805EC0AABBCC", Model: "T46U"}, devOps)
	if !errors.Is(err, store.ErrExists) {
		t.Fatalf("same MAC twice in one account: err = %v, want ErrExists", err)
	}
	if da, _ := f.db.Device("a", "805ec0aabbcc"); da.Model != "T54W" {
		t.Fatalf("account b's claim changed account a's device: %+v", da)
	}
	want := []store.MACClaim{{MAC: "805ec0aabbcc", Accounts: []string{"a", "b"}}}
	for _, mac := range []string{"", "80-5E-C0-AA-BB-CC"} {
		if got, err := f.db.MACClaims(mac); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("MACClaims(%q) = %+v, %v; want %+v", mac, got, err, want)
		}
	}
	if _, err := f.db.MACClaims("nonsense"); err == nil {
		t.Fatal("MACClaims of a bad MAC = nil error")
	}
	if _, err := f.db.DeviceByMAC("805ec0aabbcc"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeviceByMAC of a MAC in two accounts = %v, want ErrNotFound (no single device)", err)
	}
	// A fetch names its account: only that account's device is stamped.
	if err := f.db.RecordFetch(store.Fetch{AccountID: "b", MAC: "805ec0aabbcc", Source: "192.0.2.9", Hash: "h"}); err != nil {
		t.Fatal(err)
	}
	if da, _ := f.db.Device("a", "805ec0aabbcc"); !da.LastProvisionedAt.IsZero() {
		t.Fatal("a fetch through account b stamped account a's device")
	}
	if err := f.db.Check(); err != nil {
		t.Fatalf("Check = %v", err)
	}
	if err := f.db.DeleteDevice("a", "805ec0aabbcc", devOps); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.db.MACClaims(""); len(got) != 0 {
		t.Fatalf("MACClaims after one account deleted it = %+v, want none", got)
	}
	if d, err := f.db.DeviceByMAC("805ec0aabbcc"); err != nil || d.AccountID != "b" {
		t.Fatalf("DeviceByMAC = %+v, %v; want account b", d, err)
	}
	if err := f.db.Check(); err != nil {
		t.Fatalf("Check = %v", err)
	}
}

// TestDeviceProvisioningCredentials: each device has its own username and
// password, sealed at rest, shown only by the audited read, never in a
// Device; a rotation keeps the previous password for the grace period.
func TestDeviceProvisioningCredentials(t *testing.T) {
	f := newDevFixture(t)
	da, err := f.db.CreateDevice("a", store.NewDevice{MAC: "805ec0aabbcc", Model: "T54W"}, devOps)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.CreateDevice("a", store.NewDevice{MAC: "805ec0aabbdd", Model: "T54W"}, devOps); err != nil {
		t.Fatal(err)
	}
	ca, err := f.db.DeviceProvisioningCredentials("a", "805ec0aabbcc", devOps)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := f.db.DeviceProvisioningCredentials("a", "805ec0aabbdd", devOps)
	if err != nil {
		t.Fatal(err)
	}
	if mac, ok := store.DeviceUsernameMAC(ca.Username); !ok || mac != "805ec0aabbcc" || len(ca.Password) < 20 {
		t.Fatalf("credentials = %q (mac %q, %v), %d-char password", ca.Username, mac, ok, len(ca.Password))
	}
	if ca.Username == cb.Username || ca.Password == cb.Password {
		t.Fatal("two devices share credentials")
	}
	acct, err := f.db.ProvisioningSettings("a", devOps)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Password == acct.Password || ca.Username == acct.Username {
		t.Fatal("a device's credentials are the account's")
	}
	if strings.Contains(ca.String()+ca.GoString(), ca.Password) {
		t.Fatal("String shows the password")
	}
	// Not in the device, its JSON, any list, or the data file in clear.
	ds, _ := f.db.Devices("a")
	js, _ := json.Marshal(append(ds, da))
	if strings.Contains(string(js), ca.Password) || strings.Contains(fmt.Sprintf("%+v", ds), ca.Password) {
		t.Fatal("a device or the device list carries the password")
	}
	raw := storetest.Raw(t, f.db.Dir())
	if bytes.Contains(raw, []byte(ca.Password)) {
		t.Fatal("the provisioning password is stored in clear")
	}

	r, err := f.db.RotateDeviceProvisioningCredentials("a", "805ec0aabbcc", devOps)
	if err != nil {
		t.Fatal(err)
	}
	if r.Username != ca.Username || r.Password == ca.Password || r.PreviousPassword != ca.Password {
		t.Fatalf("rotation: same username, new password, old one as previous; got %v", r)
	}
	_, auth, err := f.db.DeviceAuth("a", "805ec0aabbcc")
	if err != nil || !reflect.DeepEqual(auth.Passwords(), []string{r.Password, ca.Password}) {
		t.Fatalf("within grace both passwords work: %v, %v", auth.Passwords(), err)
	}
	f.clock.Advance(store.ProvisioningGrace + time.Second)
	if _, auth, _ = f.db.DeviceAuth("a", "805ec0aabbcc"); !reflect.DeepEqual(auth.Passwords(), []string{r.Password}) {
		t.Fatal("after the grace period only the new password works")
	}
	if _, err := f.db.DeviceProvisioningCredentials("b", "805ec0aabbcc", devOps); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another account's device credentials = %v, want ErrNotFound", err)
	}
	entries, _ := f.db.Audit("a", 100, 0)
	count := map[string]int{}
	for _, e := range entries {
		count[e.Action]++
	}
	if count["device.provisioning_credentials.read"] != 2 || count["device.provisioning_credentials.rotate"] != 1 {
		t.Fatalf("audit = %v, want 2 reads and 1 rotation", count)
	}

	// The first fetch with the device's own credentials is recorded once.
	for range 2 {
		if err := f.db.RecordFetch(store.Fetch{AccountID: "a", MAC: "805ec0aabbcc", Source: "192.0.2.7", Hash: "h", OwnCredentials: true}); err != nil {
			t.Fatal(err)
		}
	}
	d, _ := f.db.Device("a", "805ec0aabbcc")
	if !d.CredentialsConfirmedAt.Equal(f.clock.Now()) {
		t.Fatalf("CredentialsConfirmedAt = %v, want now", d.CredentialsConfirmedAt)
	}
	// Other writes keep the credentials.
	label := "desk"
	if _, err := f.db.UpdateDevice("a", "805ec0aabbcc", store.DevicePatch{Label: &label}, devOps); err != nil {
		t.Fatal(err)
	}
	if _, auth, _ = f.db.DeviceAuth("a", "805ec0aabbcc"); auth.Username != r.Username || auth.Password != r.Password {
		t.Fatal("an update lost the device's credentials")
	}
	if err := f.db.Check(); err != nil {
		t.Fatalf("Check = %v", err)
	}
}

func TestDeviceUsernameMAC(t *testing.T) {
	for _, u := range []string{"", "805ec0aabbcc", "805ec0aabbcc-", "805EC0AABBCC-abcdefghij", "805ec0aabbc-abcdefghijk", "prov-abcdefghij", "805ec0aabbcc-abcdefghijk"} {
		if mac, ok := store.DeviceUsernameMAC(u); ok {
			t.Errorf("DeviceUsernameMAC(%q) = %q, want no MAC", u, mac)
		}
	}
	if mac, ok := store.DeviceUsernameMAC("805ec0aabbcc-abcdefghij"); !ok || mac != "805ec0aabbcc" {
		t.Errorf("DeviceUsernameMAC = %q, %v", mac, ok)
	}
}

func TestUpdateDeviceLineLimit(t *testing.T) {
	f := newDevFixture(t)
	ext := "1002"
	u2, err := f.db.CreateUser("a", store.NewUser{Extension: ext, Name: "Grace"}, devOps)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.CreateDevice("a", store.NewDevice{MAC: "805ec0aabbcc", Model: "T54W",
		Lines: []store.DeviceLine{{Line: 1, UserID: f.ada.ID}, {Line: 16, UserID: u2.ID}}}, devOps); err != nil {
		t.Fatal(err)
	}
	// A T31G has 2 accounts: line 16 no longer fits.
	model := "T31G"
	_, err = f.db.UpdateDevice("a", "805ec0aabbcc", store.DevicePatch{Model: &model}, devOps)
	wantField(t, err, "lines")
	lines := []store.DeviceLine{{Line: 2, UserID: u2.ID}, {Line: 1, UserID: f.ada.ID}}
	d, err := f.db.UpdateDevice("a", "805ec0aabbcc", store.DevicePatch{Model: &model, Lines: &lines}, devOps)
	if err != nil {
		t.Fatalf("UpdateDevice = %v", err)
	}
	if d.Model != "T31G" || len(d.Lines) != 2 || d.Lines[0].Line != 1 || d.Lines[1].UserID != u2.ID {
		t.Fatalf("device = %+v, want T31G with lines sorted 1, 2", d)
	}
	bad := []store.DeviceLine{{Line: 3, UserID: u2.ID}}
	_, err = f.db.UpdateDevice("a", "805ec0aabbcc", store.DevicePatch{Lines: &bad}, devOps)
	wantField(t, err, "lines")
	if err := f.db.Check(); err != nil {
		t.Fatalf("Check = %v", err)
	}
}

func TestUserDeletionClearsLines(t *testing.T) {
	f := newDevFixture(t)
	u2, err := f.db.CreateUser("a", store.NewUser{Extension: "1002", Name: "Grace"}, devOps)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.CreateDevice("a", store.NewDevice{MAC: "805ec0aabbcc", Model: "T54W",
		Lines: []store.DeviceLine{{Line: 1, UserID: f.ada.ID}, {Line: 2, UserID: u2.ID}}}, devOps); err != nil {
		t.Fatal(err)
	}
	if ds, err := f.db.DevicesOfUser("a", f.ada.ID); err != nil || len(ds) != 1 {
		t.Fatalf("DevicesOfUser = %d devices, %v; want 1", len(ds), err)
	}
	if _, err := f.db.DisableUser("a", f.ada.ID, devOps); err != nil {
		t.Fatal(err)
	}
	// Disabling keeps the assignment (enable restores everything) but the
	// config renders the slot inactive.
	c, err := f.db.DeviceConfig("a", "805ec0aabbcc")
	if err != nil || len(c.Lines) != 2 || c.Lines[0].Active || c.Lines[0].SIP.Password != "" || !c.Lines[1].Active {
		t.Fatalf("DeviceConfig after disable = %+v, %v; want line 1 inactive without password, line 2 active", c.Lines, err)
	}
	if err := f.db.DeleteUser("a", f.ada.ID, devOps); err != nil {
		t.Fatalf("DeleteUser = %v", err)
	}
	d, err := f.db.Device("a", "805ec0aabbcc")
	if err != nil || len(d.Lines) != 1 || d.Lines[0].UserID != u2.ID {
		t.Fatalf("device after user deletion = %+v, %v; want only line 2", d, err)
	}
	if ds, _ := f.db.DevicesOfUser("a", f.ada.ID); len(ds) != 0 {
		t.Fatalf("DevicesOfUser after deletion = %d, want 0", len(ds))
	}
	entries, _ := f.db.Audit("a", 100, 0)
	found := false
	for _, e := range entries {
		if e.Action == "device.unassign_user" && e.TargetID == "805ec0aabbcc" {
			found = true
		}
	}
	if !found {
		t.Fatal("no device.unassign_user audit entry")
	}
	if err := f.db.Check(); err != nil {
		t.Fatalf("Check = %v", err)
	}
}

func TestRecordFetch(t *testing.T) {
	f := newDevFixture(t)
	if _, err := f.db.CreateDevice("a", store.NewDevice{MAC: "805ec0aabbcc", Model: "T54W"}, devOps); err != nil {
		t.Fatal(err)
	}
	fetch := store.Fetch{MAC: "805ec0aabbcc", Source: "192.0.2.7", UserAgent: "Yealink SIP-T54W 96.86.0.100 80:5e:c0:aa:bb:cc", Firmware: "96.86.0.100", Hash: "abc"}
	for range 3 {
		if err := f.db.RecordFetch(fetch); err != nil {
			t.Fatal(err)
		}
	}
	d, _ := f.db.Device("a", "805ec0aabbcc")
	if !d.LastProvisionedAt.Equal(f.clock.Now()) || d.LastSource != "192.0.2.7" || d.LastFirmware != "96.86.0.100" || d.LastConfigHash != "abc" || d.LastUserAgent != fetch.UserAgent {
		t.Fatalf("device = %+v, want the fetch recorded", d)
	}
	entries, _ := f.db.Audit("a", 100, 0)
	n := 0
	for _, e := range entries {
		if e.Action == "device.provisioned" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d device.provisioned audit entries for 3 identical fetches, want 1", n)
	}
	if err := f.db.RecordFetch(store.Fetch{MAC: "805ec0000001"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("RecordFetch unknown = %v, want ErrNotFound", err)
	}
}

func TestProvisioningSettings(t *testing.T) {
	f := newDevFixture(t)
	s, err := f.db.ProvisioningSettings("a", devOps)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Key) < 22 || strings.ContainsAny(s.Key, "+/=") || s.Username == "" || len(s.Password) < 16 {
		t.Fatalf("settings = key %d chars, user %q, password %d chars; want a long URL-safe key", len(s.Key), s.Username, len(s.Password))
	}
	if strings.Contains(s.String(), s.Key) || strings.Contains(s.GoString(), s.Password) {
		t.Fatal("String shows a secret")
	}
	again, _ := f.db.ProvisioningSettings("a", devOps)
	if again.Key != s.Key || again.Password != s.Password {
		t.Fatal("second read changed the settings")
	}
	other, _ := f.db.ProvisioningSettings("b", devOps)
	if other.Key == s.Key {
		t.Fatal("two accounts share a key")
	}
	acc, err := f.db.AccountByProvisioningKey(s.Key)
	if err != nil || acc.Account.ID != "a" || len(acc.Passwords) != 1 || acc.Passwords[0] != s.Password {
		t.Fatalf("AccountByProvisioningKey = %v, %v", acc, err)
	}
	if _, err := f.db.AccountByProvisioningKey(s.Key + "x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("wrong key = %v, want ErrNotFound", err)
	}

	r, err := f.db.RotateProvisioning("a", devOps)
	if err != nil {
		t.Fatal(err)
	}
	if r.Key == s.Key || r.Password == s.Password || r.PreviousKey != s.Key || r.PreviousPassword != s.Password {
		t.Fatal("rotation did not replace the key and password, keeping the old ones as previous")
	}
	for _, key := range []string{r.Key, s.Key} {
		acc, err := f.db.AccountByProvisioningKey(key)
		if err != nil || acc.Account.ID != "a" || len(acc.Passwords) != 2 || acc.Settings.Key != r.Key {
			t.Fatalf("within grace, key works with both passwords and renders the new key: %v, %v", acc, err)
		}
	}
	f.clock.Advance(store.ProvisioningGrace + time.Second)
	if _, err := f.db.AccountByProvisioningKey(s.Key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old key after grace = %v, want ErrNotFound", err)
	}
	acc, err = f.db.AccountByProvisioningKey(r.Key)
	if err != nil || len(acc.Passwords) != 1 || acc.Passwords[0] != r.Password {
		t.Fatalf("after grace only the new password works: %v, %v", acc, err)
	}
	// A second rotation drops the first key entirely.
	if _, err := f.db.RotateProvisioning("a", devOps); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.AccountByProvisioningKey(s.Key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("first key after two rotations = %v, want ErrNotFound", err)
	}
}

func TestProvisioningOverrides(t *testing.T) {
	f := newDevFixture(t)
	bad := []map[string]string{
		{"Lang.GUI": "English"},
		{"lang gui": "English"},
		{"lang.gui": "Eng\nlish"},
		{"lang.gui": "a\x00"},
		{"account.1.password": "x"},
		{"account.12.sip_server.1.address": "evil.example"},
		{"static.auto_provision.server.url": "http://evil.example/"},
		{"static.auto_provision.user_agent_mac.enable": "0"},
		{"": "x"},
	}
	for _, o := range bad {
		_, err := f.db.SetProvisioningOverrides("a", o, devOps)
		wantField(t, err, "overrides")
	}
	good := map[string]string{"lang.gui": "English", "account.1.codec.opus.enable": "1", "features.direct_ip_call_enable": "0"}
	if _, err := f.db.SetProvisioningOverrides("a", good, devOps); err != nil {
		t.Fatalf("SetProvisioningOverrides = %v", err)
	}
	s, err := f.db.ProvisioningSettings("a", devOps)
	if err != nil || len(s.Overrides) != 3 || s.Overrides["lang.gui"] != "English" {
		t.Fatalf("overrides = %v, %v", s.Overrides, err)
	}
}

func TestDeviceBindings(t *testing.T) {
	f := newDevFixture(t)
	if _, err := f.db.CreateDevice("a", store.NewDevice{MAC: "805ec0aabbcc", Model: "T54W",
		Lines: []store.DeviceLine{{Line: 1, UserID: f.ada.ID}}}, devOps); err != nil {
		t.Fatal(err)
	}
	register := func(callID, source, ua, contact, instance string) {
		t.Helper()
		_, err := f.db.Register(store.RegisterRequest{AccountID: "a", UserID: f.ada.ID, CallID: callID, CSeq: 1, Source: source, Transport: "udp", UserAgent: ua,
			Contacts: []store.ContactUpdate{{URI: contact, InstanceID: instance, Expires: 3600}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	register("c1", "192.0.2.7:5062", "Yealink SIP-T54W 96.86.0.100", "sip:1001@192.0.2.7:5062", "")
	register("c2", "198.51.100.9:40000", "Zoiper rv2.10", "sip:1001@198.51.100.9:40000", "")
	register("c3", "203.0.113.5:5060", "Yealink SIP-T46U 108.86.0.20", "sip:1001@203.0.113.5:5060", "urn:uuid:00000000-0000-1000-8000-805EC0AABBCC")

	contacts := func() []string {
		bs, err := f.db.DeviceBindings("a", "805ec0aabbcc")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, b := range bs {
			out = append(out, b.Contact)
		}
		return out
	}
	// Before any fetch only the instance id identifies the phone.
	if got := contacts(); len(got) != 1 || got[0] != "sip:1001@203.0.113.5:5060" {
		t.Fatalf("DeviceBindings = %v, want the instance-id match only", got)
	}
	if err := f.db.RecordFetch(store.Fetch{MAC: "805ec0aabbcc", Source: "192.0.2.7", Hash: "h"}); err != nil {
		t.Fatal(err)
	}
	got := contacts()
	if len(got) != 2 || !strings.Contains(strings.Join(got, " "), "192.0.2.7:5062") || strings.Contains(strings.Join(got, " "), "Zoiper") {
		t.Fatalf("DeviceBindings = %v, want the Yealink from the fetch source and the instance match, never the softphone", got)
	}
}

func FuzzDeviceUsernameMAC(f *testing.F) {
	for _, s := range []string{"805ec0aabbcc-abcdefghij", "805EC0AABBCC-abcdefghij", "prov-abcdefghij", "", "-", "805ec0aabbcc-", "80:5e:c0:aa:bb:cc-abcdefghij"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mac, ok := store.DeviceUsernameMAC(s)
		if !ok {
			if mac != "" {
				t.Fatalf("DeviceUsernameMAC(%q) = %q, false", s, mac)
			}
			return
		}
		if n, valid := store.NormalizeMAC(mac); !valid || n != mac || !strings.HasPrefix(s, mac+"-") || len(s) != 23 {
			t.Fatalf("DeviceUsernameMAC(%q) = %q, not the username's own MAC", s, mac)
		}
	})
}
