package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/store"
)

// FetchWaiter reports when a device has fetched its configuration, so a
// resync can say whether the phone acted on the check-sync. The provisioning
// server implements it.
type FetchWaiter interface {
	// WaitForFetch returns nil once the device mac of the account has fetched
	// its <mac>.cfg after since, or ctx's error when ctx ends first.
	WaitForFetch(ctx context.Context, accountID, mac string, since time.Time) error
}

// deviceLineJSON assigns the phone's account slot line (1-based) to a user.
type deviceLineJSON struct {
	Line   int    `json:"line"`
	UserID string `json:"user_id"`
}

// deviceJSON is a Yealink phone as the API shows it. The last_* fields and
// firmware are what the provisioning server saw on the latest successful
// fetch; they are null until the phone has fetched once.
type deviceJSON struct {
	MAC               string           `json:"mac"`
	Model             string           `json:"model"`
	Label             string           `json:"label"`
	Lines             []deviceLineJSON `json:"lines"`
	CreatedAt         string           `json:"created_at" format:"date-time"`
	UpdatedAt         string           `json:"updated_at" format:"date-time"`
	LastProvisionedAt *string          `json:"last_provisioned_at" format:"date-time"`
	LastSource        *string          `json:"last_source"`
	Firmware          *string          `json:"firmware"`
	LastUserAgent     *string          `json:"last_user_agent"`
	LastConfigHash    *string          `json:"last_config_hash"`
	// CredentialsConfirmedAt: when the phone first fetched with its own
	// provisioning credentials; from then on the account's bootstrap
	// credential no longer opens it. null: it still does.
	CredentialsConfirmedAt *string `json:"credentials_confirmed_at" format:"date-time"`
}

// macClaimsJSON is the provider's view of device MACs across accounts.
type macClaimsJSON struct {
	Claims []macClaimJSON `json:"claims"`
}

type macClaimJSON struct {
	MAC      string   `json:"mac"`
	Accounts []string `json:"accounts"`
}

type deviceList struct {
	Devices []deviceJSON `json:"devices"`
}

type deviceCreate struct {
	MAC   string           `json:"mac"`
	Model string           `json:"model"`
	Label string           `json:"label,omitempty"`
	Lines []deviceLineJSON `json:"lines,omitempty"`
}

// devicePatch: a field left out (or null) stays; lines replaces the whole
// assignment ([] clears it).
type devicePatch struct {
	Model *string           `json:"model"`
	Label *string           `json:"label"`
	Lines *[]deviceLineJSON `json:"lines"`
}

// resyncJSON answers POST /devices/{mac}/resync.
type resyncJSON struct {
	// Sent: the check-sync NOTIFY was handed to the SIP side.
	Sent bool `json:"sent"`
	// Waited: the server waited (up to timeout_s) for the phone to fetch.
	Waited bool `json:"waited"`
	// Fetched: the phone fetched its configuration within the timeout.
	Fetched       bool       `json:"fetched"`
	TimeoutS      float64    `json:"timeout_s"`
	Registrations int        `json:"registrations"` // the device's live registrations
	Device        deviceJSON `json:"device"`
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func deviceOut(d store.Device) deviceJSON {
	out := deviceJSON{MAC: d.MAC, Model: d.Model, Label: d.Label, Lines: make([]deviceLineJSON, 0, len(d.Lines)),
		CreatedAt: rfc3339(d.CreatedAt), UpdatedAt: rfc3339(d.UpdatedAt),
		LastSource: optString(d.LastSource), Firmware: optString(d.LastFirmware),
		LastUserAgent: optString(d.LastUserAgent), LastConfigHash: optString(d.LastConfigHash)}
	for _, l := range d.Lines {
		out.Lines = append(out.Lines, deviceLineJSON{Line: l.Line, UserID: l.UserID})
	}
	if !d.LastProvisionedAt.IsZero() {
		t := rfc3339(d.LastProvisionedAt)
		out.LastProvisionedAt = &t
	}
	if !d.CredentialsConfirmedAt.IsZero() {
		t := rfc3339(d.CredentialsConfirmedAt)
		out.CredentialsConfirmedAt = &t
	}
	return out
}

// macClaims lists MACs that more than one account has added (?mac=: that
// MAC's claims, however many). Adding a MAC never tells an account that
// another has it; this provider-only view is where such overlaps show.
func (s *server) macClaims(c *gin.Context) error {
	cs, err := s.db.MACClaims(c.Query("mac"))
	if err != nil {
		return err
	}
	out := macClaimsJSON{Claims: make([]macClaimJSON, 0, len(cs))}
	for _, m := range cs {
		out.Claims = append(out.Claims, macClaimJSON{MAC: m.MAC, Accounts: m.Accounts})
	}
	return reply(c, out)
}

func linesIn(ls []deviceLineJSON) []store.DeviceLine {
	out := make([]store.DeviceLine, 0, len(ls))
	for _, l := range ls {
		out = append(out, store.DeviceLine{Line: l.Line, UserID: l.UserID})
	}
	return out
}

func (s *server) listDevices(c *gin.Context) error {
	ds, err := s.db.Devices(c.Param("account"))
	if err != nil {
		return err
	}
	out := deviceList{Devices: make([]deviceJSON, 0, len(ds))}
	for _, d := range ds {
		out.Devices = append(out.Devices, deviceOut(d))
	}
	return reply(c, out)
}

func (s *server) createDevice(c *gin.Context) error {
	var in deviceCreate
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	d, err := s.db.CreateDevice(c.Param("account"), store.NewDevice{MAC: in.MAC, Model: in.Model, Label: in.Label, Lines: linesIn(in.Lines)}, actor(c))
	if err != nil {
		return err
	}
	return reply(c, deviceOut(d))
}

func (s *server) getDevice(c *gin.Context) error {
	d, err := s.db.Device(c.Param("account"), c.Param("mac"))
	if err != nil {
		return err
	}
	return reply(c, deviceOut(d))
}

func (s *server) updateDevice(c *gin.Context) error {
	var in devicePatch
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	acct, mac := c.Param("account"), c.Param("mac")
	var (
		d   store.Device
		err error
	)
	if in.Model == nil && in.Label == nil && in.Lines == nil {
		d, err = s.db.Device(acct, mac)
	} else {
		p := store.DevicePatch{Model: in.Model, Label: in.Label}
		if in.Lines != nil {
			ls := linesIn(*in.Lines)
			p.Lines = &ls
		}
		d, err = s.db.UpdateDevice(acct, mac, p, actor(c))
	}
	if err != nil {
		return err
	}
	return reply(c, deviceOut(d))
}

func (s *server) deleteDevice(c *gin.Context) error {
	if err := s.db.DeleteDevice(c.Param("account"), c.Param("mac"), actor(c)); err != nil {
		return err
	}
	return reply(c, nil)
}

// Resync timeouts: how long POST /resync waits for the phone's fetch.
const (
	defaultResyncTimeout = 10 * time.Second
	maxResyncTimeout     = 60 * time.Second
)

// resyncTimeout reads ?timeout= (seconds, fractions allowed, 0 to 60; 0: do
// not wait).
func resyncTimeout(c *gin.Context) (time.Duration, error) {
	v := c.Query("timeout")
	if v == "" {
		return defaultResyncTimeout, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f > maxResyncTimeout.Seconds() {
		return 0, errInvalid("timeout", fmt.Sprintf("timeout must be a number of seconds from 0 to %.0f", maxResyncTimeout.Seconds()))
	}
	return time.Duration(f * float64(time.Second)), nil
}

// resyncDevice sends the device a check-sync and waits (up to the timeout)
// for it to fetch its configuration. Refusals: no SIP side (503
// sip_unavailable), no live registration of the device to send the NOTIFY to
// (409 device_not_registered), the SIP side failed to send it (502
// check_sync_failed).
func (s *server) resyncDevice(c *gin.Context) error {
	acct := c.Param("account")
	d, err := s.db.Device(acct, c.Param("mac"))
	if err != nil {
		return err
	}
	timeout, err := resyncTimeout(c)
	if err != nil {
		return err
	}
	if s.notifier == nil {
		return &apiError{Status: http.StatusServiceUnavailable, Code: "sip_unavailable", Message: "no SIP server is connected to send check-sync"}
	}
	bs, err := s.db.DeviceBindings(acct, d.MAC)
	if err != nil {
		return err
	}
	if len(bs) == 0 {
		return &apiError{Status: http.StatusConflict, Code: "device_not_registered",
			Message: fmt.Sprintf("device %s has no live registration to send check-sync to; it picks up changes at its next scheduled fetch", d.MAC)}
	}
	since := s.db.Now()
	ctx, cancel := context.WithTimeout(c.Request.Context(), checkSyncTimeout)
	err = s.notifier.CheckSync(ctx, acct, d.MAC)
	cancel()
	if err != nil {
		s.log.WarnContext(c, "check-sync failed", "account", acct, "mac", d.MAC, "err", err)
		return &apiError{Status: http.StatusBadGateway, Code: "check_sync_failed", Message: fmt.Sprintf("check-sync to device %s failed: %v", d.MAC, err)}
	}
	out := resyncJSON{Sent: true, TimeoutS: timeout.Seconds(), Registrations: len(bs)}
	if s.waiter != nil && timeout > 0 {
		out.Waited = true
		wctx, cancel := context.WithTimeout(c.Request.Context(), timeout)
		err := s.waiter.WaitForFetch(wctx, acct, d.MAC, since)
		cancel()
		out.Fetched = err == nil
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			s.log.WarnContext(c, "wait for provisioning fetch", "account", acct, "mac", d.MAC, "err", err)
		}
	}
	if d, err = s.db.Device(acct, d.MAC); err != nil {
		return err
	}
	out.Device = deviceOut(d)
	return reply(c, out)
}
