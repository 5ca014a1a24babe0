package main

import (
	"fmt"
	"os"

	"github.com/dialtone-voip/dialtone/admin"
	"github.com/dialtone-voip/dialtone/sip"
	"github.com/dialtone-voip/dialtone/sip/media"
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
