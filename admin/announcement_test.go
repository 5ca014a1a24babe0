package admin

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"testing"
)

// wav returns a RIFF WAVE file of 16-bit PCM mono at rate Hz: a 440 Hz tone.
func wav(rate int, d float64) []byte {
	n := int(float64(rate) * d)
	var data bytes.Buffer
	for i := range n {
		binary.Write(&data, binary.LittleEndian, int16(8000*math.Sin(2*math.Pi*440*float64(i)/float64(rate))))
	}
	var b bytes.Buffer
	b.WriteString("RIFF")
	binary.Write(&b, binary.LittleEndian, uint32(36+data.Len()))
	b.WriteString("WAVEfmt ")
	// fmt chunk: size 16, PCM, mono, rate, byte rate, block align 2, 16 bits.
	for _, v := range []any{uint32(16), uint16(1), uint16(1), uint32(rate), uint32(rate * 2), uint16(2), uint16(16)} {
		binary.Write(&b, binary.LittleEndian, v)
	}
	b.WriteString("data")
	binary.Write(&b, binary.LittleEndian, uint32(data.Len()))
	b.Write(data.Bytes())
	return b.Bytes()
}

// fakeAnnouncer checks what the SIP side's loader checks first (RIFF WAVE,
// PCM mono 8 kHz, a data chunk) and keeps the last good file.
type fakeAnnouncer struct {
	mu      sync.Mutex
	current []byte
}

func (a *fakeAnnouncer) SetAnnouncementWAV(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if len(b) < 44 || string(b[0:4]) != "RIFF" || string(b[8:16]) != "WAVEfmt " || string(b[36:40]) != "data" {
		return errors.New("invalid announcement WAV: not a RIFF WAVE file")
	}
	if ch, rate := binary.LittleEndian.Uint16(b[22:]), binary.LittleEndian.Uint32(b[24:]); ch != 1 || rate != 8000 {
		return fmt.Errorf("invalid announcement WAV: must be 8 kHz mono, got %d channels at %d Hz", ch, rate)
	}
	a.mu.Lock()
	a.current = b
	a.mu.Unlock()
	return nil
}

func (a *fakeAnnouncer) Current() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.current
}

func TestAnnouncement(t *testing.T) {
	e := newEnv(t)
	const path = "/api/v1/announcement"
	good := wav(8000, 1.5)

	// Without an announcer: 503 (a body that is no audio at all is 400 first).
	e.callErr("PUT", path, providerSecret, good, 503, "announcer_unavailable")
	e.callErr("PUT", path, providerSecret, nil, 400, "invalid_audio")

	a := &fakeAnnouncer{}
	ae := e.with(func(o *Options) { o.Announcer = a })
	ae.callErr("PUT", path, e.token("default", "admin"), good, 403, "forbidden")
	if status, body := ae.do("PUT", path, providerSecret, good); status != 204 || len(body) != 0 {
		t.Fatalf("PUT a good WAV = %d %s", status, body)
	}
	if !bytes.Equal(a.Current(), good) {
		t.Fatal("the announcer did not get the file")
	}

	// Refused files keep the old announcement, with the loader's reason.
	er := ae.callErr("PUT", path, providerSecret, "this is not audio at all, just some text", 400, "invalid_audio")
	if !strings.Contains(er.Error.Message, "not a RIFF WAVE file") {
		t.Errorf("message %q lacks the loader's reason", er.Error.Message)
	}
	er = ae.callErr("PUT", path, providerSecret, wav(16000, 0.5)[:60], 400, "invalid_audio")
	if !strings.Contains(er.Error.Message, "8 kHz mono") {
		t.Errorf("message %q lacks the loader's reason", er.Error.Message)
	}
	ae.callErr("PUT", path, providerSecret, bytes.Repeat([]byte{0}, maxAnnouncementBody+1), 413, "body_too_large")
	if !bytes.Equal(a.Current(), good) {
		t.Error("a refused file replaced the announcement")
	}

	// The change and the refusals are in the provider's audit log (a 503 is
	// not a refusal; the admin's 403 went to their own account's log).
	var audit auditList
	e.call("GET", "/api/v1/audit", providerSecret, nil, 200, &audit)
	var results []string
	for _, en := range audit.Entries {
		if en.Action == "announcement.set" {
			results = append(results, en.Result)
		}
	}
	if want := "body_too_large invalid_audio invalid_audio ok invalid_audio"; strings.Join(results, " ") != want {
		t.Errorf("audit = %v, want %s", results, want)
	}

	// The raw body is documented as such.
	var doc struct {
		Paths map[string]map[string]struct {
			RequestBody struct {
				Content map[string]any `json:"content"`
			} `json:"requestBody"`
		} `json:"paths"`
	}
	e.call("GET", "/api/v1/openapi.json", "", nil, 200, &doc)
	if _, ok := doc.Paths[path]["put"].RequestBody.Content["audio/wav"]; !ok {
		t.Errorf("openapi.json: PUT %s has no audio/wav request body", path)
	}
}
