package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"

	"github.com/dialtone-voip/dialtone/admin"
	"github.com/dialtone-voip/dialtone/sip"
	"github.com/dialtone-voip/dialtone/sip/media"
	"github.com/dialtone-voip/dialtone/store"
)

// wireCalls hands the SIP server to the admin API for what needs SIP:
// check-sync NOTIFYs, waiting for a phone's fetch, and the announcement.
func wireCalls(o *admin.Options, s *sip.Server) {
	o.Notifier = s
	o.FetchWaiter = s
	o.Announcer = s
}

// loadAnnouncement reads --announcement; "" means the built-in one.
func loadAnnouncement(path string) (*media.Announcement, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--announcement: %w", err)
	}
	defer f.Close()
	a, err := media.LoadWAV(f)
	if err != nil {
		return nil, fmt.Errorf("--announcement %s: %w", path, err)
	}
	return a, nil
}

// storedAnnouncement is the announcement last uploaded with PUT
// /api/v1/announcement, if any: it wins over --announcement (it is the
// newer choice). nil if none was uploaded.
func storedAnnouncement(db *store.DB, log *slog.Logger) (*media.Announcement, error) {
	wav, err := db.Announcement()
	if err != nil {
		return nil, fmt.Errorf("stored announcement: %w", err)
	}
	if wav == nil {
		return nil, nil
	}
	a, err := media.LoadWAV(bytes.NewReader(wav))
	if err != nil {
		return nil, fmt.Errorf("stored announcement (set with PUT /api/v1/announcement): %w", err)
	}
	log.Info("playing the announcement uploaded with PUT /api/v1/announcement (it replaces --announcement)", "bytes", len(wav))
	return a, nil
}
