package admin

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/dialtone-voip/dialtone/store"
)

// FuzzCreateUserBody sends arbitrary bodies to POST /users. Whatever arrives,
// the answer is 201 with a user or a JSON error of a documented status, never
// a 500 or a panic, and it matches the OpenAPI document. Seeds: testdata/fuzz/FuzzCreateUserBody.
func FuzzCreateUserBody(f *testing.F) {
	f.Add([]byte(`{"extension": "1002", "name": "Ada Lovelace", "email": "ada@example.test"}`))
	f.Add([]byte(`{"extension": 1002}`))
	db, err := store.Open(f.TempDir(), store.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	if _, _, err := db.EnsureAccount(store.DefaultAccount, "example.test"); err != nil {
		f.Fatal(err)
	}
	_, secret, err := db.CreateToken(store.DefaultAccount, store.RoleAdmin, "fuzz", store.System)
	if err != nil {
		f.Fatal(err)
	}
	h, err := NewHandler(Options{DB: db, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", base+"/users", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+secret)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		checkResponse(t, req, rec.Code, rec.Header(), rec.Body.Bytes())
		switch rec.Code {
		case http.StatusCreated:
			var u userJSON
			if err := json.Unmarshal(rec.Body.Bytes(), &u); err != nil || u.ID == "" || u.Status != "enabled" {
				t.Fatalf("201 with %s (%v)", rec.Body, err)
			}
			// Keep the extension space free for the next input.
			if _, err := db.DisableUser(store.DefaultAccount, u.ID, store.System); err != nil {
				t.Fatal(err)
			}
			if err := db.DeleteUser(store.DefaultAccount, u.ID, store.System); err != nil {
				t.Fatal(err)
			}
		case http.StatusBadRequest, http.StatusConflict, http.StatusRequestEntityTooLarge:
			var eb apiErrBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error.Code == "" || eb.Error.Message == "" {
				t.Fatalf("%d with %s (%v)", rec.Code, rec.Body, err)
			}
			if errorStatus[eb.Error.Code] != rec.Code {
				t.Fatalf("code %s with status %d", eb.Error.Code, rec.Code)
			}
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}

// FuzzDecodeJSON checks the decoder alone: it either fills the struct or
// returns an *apiError, never panics.
func FuzzDecodeJSON(f *testing.F) {
	f.Add([]byte(`{"extension": "1002", "name": "Ada"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var in userPatch
		err := decodeJSON(body, &in)
		if err == nil {
			return
		}
		ae, ok := err.(*apiError)
		if !ok || ae.Code != "invalid" || ae.Message == "" {
			t.Fatalf("decodeJSON(%q) = %#v", body, err)
		}
	})
}
