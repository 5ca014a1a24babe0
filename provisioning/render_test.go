package provisioning

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dialtone-voip/dialtone/store"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current templates")

func goldenUser(id, ext, name, status string) store.User {
	return store.User{ID: id, AccountID: "acme", Extension: ext, Name: name, Status: status}
}

// goldenConfig is a fixed device: line 1 Ada (enabled), line 2 Grace
// (disabled, so cleared), and for models with more than two accounts line 3
// Linus (enabled); every other slot unused.
func goldenConfig(t *testing.T, model string) store.DeviceConfig {
	t.Helper()
	m, ok := store.LookupModel(model)
	if !ok {
		t.Fatalf("LookupModel(%s) failed", model)
	}
	c := store.DeviceConfig{
		Account:     store.Account{ID: "acme", SIPDomain: "example.test"},
		Device:      store.Device{AccountID: "acme", MAC: "805ec0aabbcc", Model: m.Name},
		Model:       m,
		Credentials: store.DeviceCredentials{MAC: "805ec0aabbcc", Username: "805ec0aabbcc-devuser12a", Password: "DevicePassw0rdDDDDDD"},
		Lines: []store.LineConfig{
			{Line: 1, UserID: "u-ada", User: goldenUser("u-ada", "1001", "Ada Lovelace", store.StatusEnabled), Active: true,
				SIP: store.SIPCredentials{Username: "1001", Password: "AdaSipPassw0rdAAAAAA", Realm: "example.test", Domain: "example.test"}},
			{Line: 2, UserID: "u-grace", User: goldenUser("u-grace", "1002", "Grace Hopper", store.StatusDisabled)},
		},
	}
	if m.Accounts >= 3 {
		c.Lines = append(c.Lines, store.LineConfig{Line: 3, UserID: "u-linus", User: goldenUser("u-linus", "1003", "", store.StatusEnabled), Active: true,
			SIP: store.SIPCredentials{Username: "1003", Password: "LinusSipPassw0rdBBBB", Realm: "example.test", Domain: "example.test"}})
	}
	return c
}

var goldenProv = store.ProvisioningSettings{
	AccountID: "acme", Key: "KEYKEYKEYKEYKEYKEYKEYKEYKEYKEYKE", Username: "prov-test", Password: "ProvPassw0rdCCCCCCCC",
	Overrides: map[string]string{"lang.gui": "English", "features.direct_ip_call_enable": "0"},
}

var goldenSIP = sipSettings{Proxy: "sip.example.test", Port: 5060, Transport: 0, Expires: 3600}

func renderGolden(t *testing.T, model string) []byte {
	t.Helper()
	body, _, err := renderMAC(goldenConfig(t, model), goldenProv.Overrides, "https://prov.example.test:8443/p/"+goldenProv.Key+"/", goldenSIP, 60, "pool.ntp.org", "+1")
	if err != nil {
		t.Fatalf("renderMAC(%s) = %v", model, err)
	}
	return body
}

func TestGolden(t *testing.T) {
	for _, model := range []string{"T54W", "T46U", "T31G", "W60B"} {
		t.Run(model, func(t *testing.T) {
			got := renderGolden(t, model)
			path := filepath.Join("testdata", model+".cfg.golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("render(%s) differs from %s (run go test -update and review the diff):\n%s", model, path, firstDiff(got, want))
			}
			if again := renderGolden(t, model); !bytes.Equal(again, got) {
				t.Error("two renders of the same data differ")
			}
		})
	}
}

func firstDiff(got, want []byte) string {
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return "line " + strconv.Itoa(i+1) + ":\n got: " + gl + "\nwant: " + wl
		}
	}
	return ""
}

func TestRenderFormatAndSlots(t *testing.T) {
	for _, model := range []string{"T54W", "T31G", "W60B", "W90DM", "CP960"} {
		t.Run(model, func(t *testing.T) {
			m, _ := store.LookupModel(model)
			body := string(renderGolden(t, model))
			lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
			if lines[0] != "#!version:1.0.0.1" {
				t.Fatalf("first line = %q", lines[0])
			}
			seen := map[string]bool{}
			for _, l := range lines[1:] {
				if l == "" || strings.HasPrefix(l, "#") {
					continue
				}
				key, _, ok := strings.Cut(l, " = ")
				if !ok || strings.ContainsAny(key, " \t") {
					t.Fatalf("line %q is not 'key = value'", l)
				}
				if seen[key] {
					t.Fatalf("key %s rendered twice", key)
				}
				seen[key] = true
			}
			for n := 1; n <= m.Accounts; n++ {
				if !seen["account."+strconv.Itoa(n)+".enable"] {
					t.Fatalf("account.%d.enable missing for a %s", n, model)
				}
			}
			if seen["account."+strconv.Itoa(m.Accounts+1)+".enable"] {
				t.Fatalf("account.%d rendered for a %s with %d accounts", m.Accounts+1, model, m.Accounts)
			}
			if !strings.Contains(body, "AdaSipPassw0rd") {
				t.Fatal("active line 1 password missing")
			}
			if m.Accounts >= 2 && (!strings.Contains(body, "account.2.enable = 0\n") || !strings.Contains(body, "account.2.password = %NULL%\n")) {
				t.Fatal("disabled user's line 2 not cleared")
			}
		})
	}
}

func TestRenderCommonHasNothingAccountSpecific(t *testing.T) {
	body, err := renderCommon("y000000000096.cfg")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(body), "#!version:1.0.0.1\n") {
		t.Fatalf("common file = %q", body)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(body)), "\n")[1:] {
		if !strings.HasPrefix(l, "#") {
			t.Fatalf("common file has a setting: %q", l)
		}
	}
}

func TestParseUserAgent(t *testing.T) {
	tests := []struct {
		in   string
		ok   bool
		want UserAgent
	}{
		{"Yealink SIP-T54W 96.86.0.100 80:5e:c0:aa:bb:cc", true, UserAgent{"T54W", "96.86.0.100", "805ec0aabbcc"}},
		{"Yealink SIP-T46G 28.83.0.120 00:15:65:4a:a9:37", true, UserAgent{"T46G", "28.83.0.120", "0015654aa937"}},
		{"Yealink SIP-T31G 124.85.257.55 80:5e:c0:d5:7d:72", true, UserAgent{"T31G", "124.85.257.55", "805ec0d57d72"}},
		{"Yealink W90DM 130.87.0.10 80:5e:c0:d9:c7:44", true, UserAgent{"W90DM", "130.87.0.10", "805ec0d9c744"}},
		{"Yealink W80B 103.87.0.10 24:9a:d8:d1:a6:31", true, UserAgent{"W80B", "103.87.0.10", "249ad8d1a631"}},
		{"Yealink CP960 73.83.0.30 00:15:65:8a:37:86", true, UserAgent{"CP960", "73.83.0.30", "0015658a3786"}},
		{"Yealink SIP VP-T49G 51.80.0.10 00:15:65:9b:5a:44", true, UserAgent{"T49G", "51.80.0.10", "0015659b5a44"}},
		{"yealink SIP-T28P 2.70.0.140 00:15:65:13:ae:0b", true, UserAgent{"T28P", "2.70.0.140", "00156513ae0b"}},
		{"Yealink SIP-T38G  38.70.0.125 00:15:65:2f:c3:5e", true, UserAgent{"T38G", "38.70.0.125", "0015652fc35e"}},
		{"Yealink SIP-T56A  58.80.0.25 001565f429a4", true, UserAgent{"T56A", "58.80.0.25", "001565f429a4"}},
		{"Yealink-T46G 28.71.0.81 28.1.0.128.0.0.0", true, UserAgent{"T46G", "28.71.0.81", ""}},
		{"Yealink SIP-T19P_E2 53.84.0.15 00:15:65:00:00:01", true, UserAgent{"T19P_E2", "53.84.0.15", "001565000001"}},
		{"Yealink SIP-T23G 44.80.0.20", true, UserAgent{"T23G", "44.80.0.20", ""}},
		{"Yealink SIP-T54W 96.86.0.100 80:5e:c0:aa:bb:cc 80:5e:c0:dd:ee:ff", true, UserAgent{"T54W", "96.86.0.100", ""}},
		{"curl/8.5.0", false, UserAgent{}},
		{"Mozilla/5.0 (X11; Linux x86_64)", false, UserAgent{}},
		{"", false, UserAgent{}},
		{"Yealink", false, UserAgent{}},
		{"Yealink SIP", false, UserAgent{}},
		{"Yealink SIP-<script> 1.2.3", false, UserAgent{}},
	}
	for _, tt := range tests {
		got, ok := ParseUserAgent(tt.in)
		if ok != tt.ok || got != tt.want {
			t.Errorf("ParseUserAgent(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzParseUserAgent(f *testing.F) {
	for _, s := range []string{
		"Yealink SIP-T54W 96.86.0.100 80:5e:c0:aa:bb:cc",
		"yealink SIP-T28P 2.70.0.140 00:15:65:13:ae:0b",
		"Yealink SIP-T38G  38.70.0.125 00:15:65:2f:c3:5e",
		"Yealink W90DM 130.87.0.10 80:5e:c0:d9:c7:44",
		"Yealink SIP-T56A  58.80.0.25 001565f429a4",
		"Yealink SIP VP-T49G 51.80.0.10 00:15:65:9b:5a:44",
		"Yealink-T46G 28.71.0.81 28.1.0.128.0.0.0",
		"Yealink SIP-T23G 44.80.0.20",
		"curl/8.5.0",
		"",
		"Yealink SIP- \x00 80:5e:c0:aa:bb:cc",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ua, ok := ParseUserAgent(s)
		if !ok {
			if ua != (UserAgent{}) {
				t.Fatalf("not ok but returned %+v", ua)
			}
			return
		}
		if !validModelToken(ua.Model) {
			t.Fatalf("model %q is not a model token", ua.Model)
		}
		if ua.Firmware != "" && !isFirmware(ua.Firmware) {
			t.Fatalf("firmware %q", ua.Firmware)
		}
		if ua.MAC != "" {
			if m, ok := store.NormalizeMAC(ua.MAC); !ok || m != ua.MAC {
				t.Fatalf("MAC %q is not 12 lower-case hex digits", ua.MAC)
			}
		}
		if again, _ := ParseUserAgent(s); again != ua {
			t.Fatalf("not deterministic: %+v then %+v", ua, again)
		}
	})
}

const testKey = "abcdefghijklmnopqrstuvwxyz012345"

func TestParsePath(t *testing.T) {
	tests := []struct {
		in   string
		ok   bool
		want fileRequest
	}{
		{"/p/" + testKey + "/805ec0aabbcc.cfg", true, fileRequest{Key: testKey, Kind: fileMAC, MAC: "805ec0aabbcc"}},
		{"/p/" + testKey + "/805EC0AABBCC.cfg", true, fileRequest{Key: testKey, Kind: fileMAC, MAC: "805ec0aabbcc"}},
		{"/p/" + testKey + "/y000000000096.cfg", true, fileRequest{Key: testKey, Kind: fileCommon, Code: "000000000096"}},
		{"/p/" + testKey + "/805ec0aabbcc.boot", true, fileRequest{Key: testKey, Kind: fileBoot, MAC: "805ec0aabbcc"}},
		{"/p/" + testKey + "/y000000000000.boot", true, fileRequest{Key: testKey, Kind: fileBoot}},
		{"/p/" + testKey + "/../805ec0aabbcc.cfg", false, fileRequest{}},
		{"/p/" + testKey + "/805ec0aabbcc0.cfg", false, fileRequest{}},
		{"/p/" + testKey + "/805ec0aabbcc\x00.cfg", false, fileRequest{}},
		{"/p/" + testKey + "/805ec0aabbcc.cfg.bak", false, fileRequest{}},
		{"/p/" + testKey + "/805ec0aabbcc-local.cfg", false, fileRequest{}},
		{"/p/" + testKey + "/805ec0aabbcc_Security.enc", false, fileRequest{}},
		{"/p/" + testKey + "/", false, fileRequest{}},
		{"/p/" + testKey + "/sub/805ec0aabbcc.cfg", false, fileRequest{}},
		{"/p/WRONG/805ec0aabbcc.cfg", false, fileRequest{}},
		{"/p/" + testKey + "!/805ec0aabbcc.cfg", false, fileRequest{}},
		{"/805ec0aabbcc.cfg", false, fileRequest{}},
		{"/p/" + testKey + "/Y000000000096.cfg", false, fileRequest{}},
	}
	for _, tt := range tests {
		got, ok := parsePath(tt.in)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parsePath(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"/p/" + testKey + "/805ec0aabbcc.cfg",
		"/p/" + testKey + "/805EC0AABBCC.cfg",
		"/p/" + testKey + "/y000000000096.cfg",
		"/p/" + testKey + "/y000000000000.boot",
		"/p/" + testKey + "/../805ec0aabbcc.cfg",
		"/p/" + testKey + "/%2e%2e/805ec0aabbcc.cfg",
		"/p/" + testKey + "/805ec0aabbcc\x00.cfg",
		"/p/" + testKey + "/805ec0aabbcc0.cfg",
		"/p//805ec0aabbcc.cfg",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, ok := parsePath(s)
		if !ok {
			return
		}
		if strings.Contains(s, "..") || strings.ContainsRune(s, 0) || strings.Count(s, "/") != 3 {
			t.Fatalf("accepted hostile path %q", s)
		}
		if !validKey(r.Key) || !strings.HasPrefix(s, "/p/"+r.Key+"/") {
			t.Fatalf("key %q not taken from %q", r.Key, s)
		}
		switch r.Kind {
		case fileMAC:
			if m, ok := store.NormalizeMAC(r.MAC); !ok || m != r.MAC {
				t.Fatalf("MAC %q", r.MAC)
			}
		case fileCommon:
			if len(r.Code) != 12 || !isDigits(r.Code) {
				t.Fatalf("code %q", r.Code)
			}
		case fileBoot:
		default:
			t.Fatalf("kind %d", r.Kind)
		}
	})
}

// BenchmarkRenderMAC is the rendering alone, for a 16-account T54W.
func BenchmarkRenderMAC(b *testing.B) {
	m, _ := store.LookupModel("T54W")
	c := store.DeviceConfig{Account: store.Account{ID: "acme", SIPDomain: "example.test"}, Device: store.Device{MAC: "805ec0aabbcc", Model: "T54W"}, Model: m,
		Lines: []store.LineConfig{{Line: 1, Active: true, User: goldenUser("u", "1001", "Ada", store.StatusEnabled), SIP: store.SIPCredentials{Username: "1001", Password: "pw"}}}}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := renderMAC(c, goldenProv.Overrides, "https://x/p/k/", goldenSIP, 60, "", ""); err != nil {
			b.Fatal(err)
		}
	}
}
