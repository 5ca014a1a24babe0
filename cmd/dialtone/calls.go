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

// sipComponents are the SIP components built on the endpoint.
type sipComponents struct {
	registrar *sip.Registrar
	announcer *sip.Announcer
	proxy     *sip.Proxy
	notifier  *sip.Notifier
}

// newSIPComponents builds the registrar, announcer, proxy and notifier on
// the endpoint s (before it serves).
func newSIPComponents(s *sip.Server, cfg config, announcement *media.Announcement) (sipComponents, error) {
	var c sipComponents
	var err error
	if c.registrar, err = sip.NewRegistrar(s, sip.RegistrarConfig{
		MinExpires: cfg.MinExpires, MaxExpires: cfg.MaxExpires, DefaultExpires: cfg.DefaultExpires}); err != nil {
		return c, err
	}
	rtpMin, rtpMax, _ := cfg.rtpRange()
	if c.announcer, err = sip.NewAnnouncer(s, sip.AnnouncerConfig{
		Announcement: announcement, MediaIP: cfg.MediaIP, RTPPortMin: rtpMin, RTPPortMax: rtpMax}); err != nil {
		return c, err
	}
	if c.proxy, err = sip.NewProxy(s, sip.ProxyConfig{RingTimeout: cfg.RingTimeout,
		Dialogs: sip.DialogLimits{Max: cfg.SIPMaxDialogs, MaxAge: cfg.SIPDialogMaxAge}}, c.announcer); err != nil {
		return c, err
	}
	c.notifier, err = sip.NewNotifier(s)
	return c, err
}

// wireCalls hands the SIP components to the admin API for what needs SIP:
// check-sync NOTIFYs and waiting for a phone's fetch (the notifier), and
// the announcement (the announcer).
func wireCalls(o *admin.Options, c sipComponents) {
	o.Notifier = c.notifier
	o.FetchWaiter = c.notifier
	o.Announcer = c.announcer
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
