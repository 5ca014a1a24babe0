package admin

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/store"
)

// Announcer replaces the "Extension is not recognized" announcement. The SIP
// side implements it; a WAV it refuses leaves the old announcement playing.
type Announcer interface {
	SetAnnouncementWAV(r io.Reader) error
}

// maxAnnouncementBody bounds PUT /api/v1/announcement's body (a WAV file).
const maxAnnouncementBody = 16 << 20

// setAnnouncement takes the request body as a WAV file (any Content-Type;
// the bytes decide). Refusals: an empty body or one the loader refuses →
// 400 invalid_audio with the loader's reason; over 16 MiB → 413; no
// announcer wired in → 503 announcer_unavailable. The accepted WAV is stored
// and replaces --announcement at the next start.
func (s *server) setAnnouncement(c *gin.Context) error {
	data, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxAnnouncementBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &apiError{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large",
				Message: fmt.Sprintf("announcement is larger than %d MiB", maxAnnouncementBody>>20)}
		}
		return &apiError{Status: http.StatusBadRequest, Code: "invalid_audio", Message: "cannot read request body"}
	}
	if len(data) == 0 {
		return &apiError{Status: http.StatusBadRequest, Code: "invalid_audio", Message: "the request body must be a WAV file (Content-Type: audio/wav)"}
	}
	if s.announce == nil {
		return &apiError{Status: http.StatusServiceUnavailable, Code: "announcer_unavailable", Message: "no SIP server is connected to play announcements"}
	}
	if err := s.announce.SetAnnouncementWAV(bytes.NewReader(data)); err != nil {
		return &apiError{Status: http.StatusBadRequest, Code: "invalid_audio", Message: err.Error()}
	}
	// Kept in the store (with its audit entry), so dialtone plays it again
	// after a restart. If that write fails (507 on a full disk), the new
	// announcement plays only until the next restart.
	if err := s.db.SetAnnouncement(data, store.AuditEntry{AccountID: providerAudit, Actor: actor(c), Action: "announcement.set",
		TargetKind: "announcement", TargetID: "not-recognized", TargetLabel: "Extension is not recognized",
		Detail: map[string]string{"bytes": strconv.Itoa(len(data))}}); err != nil {
		return err
	}
	return reply(c, nil)
}

// addRawRequestBodies documents the request body of routes that take raw
// bytes instead of JSON (route.rawIn), which openAPI leaves out.
func addRawRequestBodies(doc map[string]any, routes []route) {
	paths, _ := doc["paths"].(map[string]map[string]any)
	for _, rt := range routes {
		if rt.rawIn == "" {
			continue
		}
		op, ok := paths[openAPIPath(rt.path)][strings.ToLower(rt.method)].(map[string]any)
		if !ok {
			continue
		}
		op["requestBody"] = map[string]any{
			"required":    true,
			"description": fmt.Sprintf("raw bytes, at most %d MiB", maxAnnouncementBody>>20),
			"content":     map[string]any{rt.rawIn: map[string]any{"schema": map[string]any{"type": "string", "format": "binary"}}},
		}
	}
}
