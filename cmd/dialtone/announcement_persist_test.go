package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dialtone-voip/dialtone/store"
)

// An announcement uploaded at run time is stored and played again after a
// restart, in preference to --announcement; a refused one is not stored.
func TestAnnouncementSurvivesRestart(t *testing.T) {
	data := t.TempDir()
	flagFile := filepath.Join(t.TempDir(), "flag.wav")
	os.WriteFile(flagFile, wav8k(1), 0o600)
	uploaded := wav8k(2)

	a := start(t, data, "--announcement", flagFile)
	put := func(body []byte) int {
		req, _ := http.NewRequest("PUT", "http://"+a.addrs.Admin+"/api/v1/announcement", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Content-Type", "audio/wav")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := put(uploaded); code != 204 {
		t.Fatalf("PUT = %d, want 204", code)
	}
	if code := put([]byte("RIFF garbage")); code != 400 {
		t.Fatalf("PUT a bad one = %d, want 400", code)
	}
	a.stop()

	db, err := store.OpenReadOnly(data)
	if err != nil {
		t.Fatal(err)
	}
	got, err := db.Announcement()
	db.Close()
	if err != nil || !bytes.Equal(got, uploaded) {
		t.Fatalf("stored announcement: %d bytes (err %v), want the %d uploaded", len(got), err, len(uploaded))
	}

	b := start(t, data, "--announcement", flagFile)
	want := fmt.Sprintf("bytes=%d", len(uploaded))
	if logs := b.logs.String(); !strings.Contains(logs, "playing the announcement uploaded") || !strings.Contains(logs, want) {
		t.Fatalf("after the restart the uploaded announcement is not the one played; logs:\n%s", logs)
	}
}
