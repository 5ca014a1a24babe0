package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// wav8k returns a mono 8 kHz PCM16 WAV of a 440 Hz tone.
func wav8k(seconds float64) []byte {
	n := int(8000 * seconds)
	var b bytes.Buffer
	w := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	b.WriteString("RIFF")
	w(uint32(36 + 2*n))
	b.WriteString("WAVEfmt ")
	w(uint32(16))
	w(uint16(1))    // PCM
	w(uint16(1))    // mono
	w(uint32(8000)) // rate
	w(uint32(16000))
	w(uint16(2))
	w(uint16(16))
	b.WriteString("data")
	w(uint32(2 * n))
	for i := 0; i < n; i++ {
		w(int16(8000 * math.Sin(2*math.Pi*440*float64(i)/8000)))
	}
	return b.Bytes()
}

// The operator's announcement: a good WAV replaces it at start or at run
// time; a bad one is refused with a clear error and the old one stays.
func TestAnnouncementReplacement(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.wav")
	os.WriteFile(bad, []byte("not a wav"), 0o600)
	err := run(context.Background(), []string{"--data", t.TempDir(), "--sip-addr", "127.0.0.1:0", "--provisioning-addr", "127.0.0.1:0",
		"--admin-addr", "127.0.0.1:0", "--announcement", bad}, func(string) string { return "" }, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "--announcement") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("start with a bad --announcement = %v, want one line naming the flag", err)
	}

	good := filepath.Join(dir, "good.wav")
	os.WriteFile(good, wav8k(1), 0o600)
	a := start(t, t.TempDir(), "--announcement", good)
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
	if code := put(wav8k(2)); code != 204 {
		t.Fatalf("PUT a valid announcement = %d, want 204", code)
	}
	if code := put([]byte("RIFF garbage")); code != 400 {
		t.Fatalf("PUT a bad announcement = %d, want 400", code)
	}
}
