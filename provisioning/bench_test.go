package provisioning_test

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/dialtone-voip/dialtone/provisioning"
	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
)

// BenchmarkServeMAC is one authenticated <mac>.cfg fetch through the handler
// (key lookup, Basic over TLS, device read, render, fetch record with its
// group-committed fsync), without the network. Compare with nginx serving
// the same bytes as a static file (DESIGN.md: within 2x).
func BenchmarkServeMAC(b *testing.B) {
	db := storetest.Open(b, nil)
	if _, err := db.CreateAccount("acme", "example.test", admin); err != nil {
		b.Fatal(err)
	}
	u, err := db.CreateUser("acme", store.NewUser{Extension: "1001", Name: "Ada Lovelace"}, admin)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := db.CreateDevice("acme", store.NewDevice{MAC: t54wMAC, Model: "T54W", Lines: []store.DeviceLine{{Line: 1, UserID: u.ID}}}, admin); err != nil {
		b.Fatal(err)
	}
	prov, err := db.ProvisioningSettings("acme", admin)
	if err != nil {
		b.Fatal(err)
	}
	h, err := provisioning.NewHandler(db, provisioning.Config{ExternalURL: "https://prov.example.test"}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.Flush) // fetch records are written after each answer
	req := httptest.NewRequest(http.MethodGet, "/p/"+prov.Key+"/"+t54wMAC+".cfg", nil)
	req.TLS = &tls.ConnectionState{}
	req.Header.Set("User-Agent", t54wUA)
	req.SetBasicAuth(prov.Username, prov.Password)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Errorf("status %d", w.Code)
				return
			}
		}
	})
}

// BenchmarkWrongPassword compares a wrong password for a known device's
// username with usernames that name no device: the handler checks the
// latter against a dummy password, so all three should cost about the same.
func BenchmarkWrongPassword(b *testing.B) {
	db := storetest.Open(b, nil)
	if _, err := db.CreateAccount("acme", "example.test", admin); err != nil {
		b.Fatal(err)
	}
	if _, err := db.CreateDevice("acme", store.NewDevice{MAC: t54wMAC, Model: "T54W"}, admin); err != nil {
		b.Fatal(err)
	}
	prov, err := db.ProvisioningSettings("acme", admin)
	if err != nil {
		b.Fatal(err)
	}
	own, err := db.DeviceProvisioningCredentials("acme", t54wMAC, admin)
	if err != nil {
		b.Fatal(err)
	}
	h, err := provisioning.NewHandler(db, provisioning.Config{ExternalURL: "https://prov.example.test", FailureLimit: 1 << 30}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	for name, user := range map[string]string{"KnownDevice": own.Username, "UnknownDevice": "805ec0000001-abcdefghij", "NotADevice": "nobody"} {
		b.Run(name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "/p/"+prov.Key+"/"+t54wMAC+".cfg", nil)
			req.TLS = &tls.ConnectionState{}
			req.Header.Set("User-Agent", t54wUA)
			req.SetBasicAuth(user, "wrong-password")
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusUnauthorized {
					b.Fatalf("status %d", w.Code)
				}
			}
		})
	}
}
