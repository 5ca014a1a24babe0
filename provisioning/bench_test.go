package provisioning_test

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/icholy/digest"

	"github.com/dialtone-voip/dialtone/provisioning"
	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
)

// BenchmarkServeMAC is one authenticated <mac>.cfg fetch of a T54W with two
// lines through the handler, with the device's own credentials, without the
// network: Basic (over TLS) and Digest with a fresh nonce count per request
// (the server refuses a replay), the fetch queued for recording. Compare
// with scripts/bench-provisioning.sh for the whole server against nginx.
func BenchmarkServeMAC(b *testing.B) {
	db := storetest.Open(b, nil)
	if _, err := db.CreateAccount("acme", "example.test", admin); err != nil {
		b.Fatal(err)
	}
	var lines []store.DeviceLine
	for i, ext := range []string{"1001", "1002"} {
		u, err := db.CreateUser("acme", store.NewUser{Extension: ext, Name: "User " + ext}, admin)
		if err != nil {
			b.Fatal(err)
		}
		lines = append(lines, store.DeviceLine{Line: i + 1, UserID: u.ID})
	}
	if _, err := db.CreateDevice("acme", store.NewDevice{MAC: t54wMAC, Model: "T54W", Lines: lines}, admin); err != nil {
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
	h, err := provisioning.NewHandler(db, provisioning.Config{ExternalURL: "https://prov.example.test"}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.Flush) // fetch records are written after each answer
	path := "/p/" + prov.Key + "/" + t54wMAC + ".cfg"
	get := func(auth string, tls_ bool) *http.Request {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if tls_ {
			req.TLS = &tls.ConnectionState{}
		}
		req.Header.Set("User-Agent", t54wUA)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		return req
	}
	serve := func(b *testing.B, req *http.Request) {
		w := &discard{h: http.Header{}}
		h.ServeHTTP(w, req)
		if w.code != http.StatusOK {
			b.Fatalf("status %d", w.code)
		}
	}
	b.Run("Basic", func(b *testing.B) {
		req := get("", true)
		req.SetBasicAuth(own.Username, own.Password)
		b.ReportAllocs()
		for b.Loop() {
			serve(b, req)
		}
	})
	b.Run("Digest", func(b *testing.B) {
		w := &discard{h: http.Header{}}
		h.ServeHTTP(w, get("", false))
		chal, err := digest.FindChallenge(w.h)
		if err != nil {
			b.Fatal(err)
		}
		// One request per Authorization (a fresh nonce count each), made in
		// batches outside the timer.
		nc := 0
		batch := func() []*http.Request {
			reqs := make([]*http.Request, 1024)
			for i := range reqs {
				nc++
				cred, err := digest.Digest(chal, digest.Options{Method: http.MethodGet, URI: path, Username: own.Username, Password: own.Password, Count: nc})
				if err != nil {
					b.Fatal(err)
				}
				reqs[i] = get(cred.String(), false)
			}
			return reqs
		}
		b.ReportAllocs()
		b.StopTimer()
		for done := 0; done < b.N; {
			reqs := batch()
			runtime.GC()
			b.StartTimer()
			for _, req := range reqs[:min(len(reqs), b.N-done)] {
				serve(b, req)
				done++
			}
			b.StopTimer()
		}
	})
}

// discard is a ResponseWriter that keeps the status and headers only.
type discard struct {
	h    http.Header
	code int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) WriteHeader(code int)        { d.code = code }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }

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
