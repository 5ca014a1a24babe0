package store

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

var (
	bDevices = []byte("devices") // acct/mac → deviceRecord (the Device and its sealed provisioning credentials)
	// bDeviceMACs indexes claims: mac/acct → acct, one entry per account that
	// added the MAC (docs/provisioning.md, "MAC claims"). Data files written
	// before claims were per account hold mac → acct; both forms are read,
	// and a legacy entry is rewritten as mac/acct when its MAC is touched.
	bDeviceMACs = []byte("device_macs")
)

// Device is a Yealink handset or DECT base an admin added to an account. Lines
// map the phone's SIP accounts (account.N) to users. The Last* fields are what
// the provisioning server saw on the most recent successful fetch.
type Device struct {
	AccountID string       `json:"account_id"`
	MAC       string       `json:"mac"` // 12 lower-case hex digits
	Model     string       `json:"model"`
	Label     string       `json:"label"`
	Lines     []DeviceLine `json:"lines"` // sorted by Line
	CreatedAt time.Time    `json:"created_at"`
	UpdatedAt time.Time    `json:"updated_at"`

	LastProvisionedAt time.Time `json:"last_provisioned_at,omitzero"`
	LastSource        string    `json:"last_source,omitempty"` // IP address of the last fetch
	LastFirmware      string    `json:"last_firmware,omitempty"`
	LastUserAgent     string    `json:"last_user_agent,omitempty"`
	LastConfigHash    string    `json:"last_config_hash,omitempty"` // hex SHA-256 of the body served

	// CredentialsConfirmedAt is when the phone first fetched with its own
	// provisioning credentials. From then on the account's bootstrap
	// credential no longer opens this device. Zero: it still does.
	CredentialsConfirmedAt time.Time `json:"credentials_confirmed_at,omitzero"`
}

// deviceRecord is what bDevices holds: the device and its provisioning
// credentials, sealed. Secrets stay out of Device, so no list, JSON or log
// of a Device can carry them.
type deviceRecord struct {
	Device
	Prov *deviceProv `json:"prov,omitempty"`
}

// deviceProv is a device's own provisioning credentials. The username is
// fixed at creation; a rotation replaces the password and keeps the previous
// one valid until PrevUntil.
type deviceProv struct {
	Username           string    `json:"username"`
	PasswordSealed     []byte    `json:"password"`
	RotatedAt          time.Time `json:"rotated_at"`
	PrevPasswordSealed []byte    `json:"prev_password,omitempty"`
	PrevUntil          time.Time `json:"prev_until,omitzero"`
}

// DeviceLine assigns the phone's account slot Line (1-based) to a user.
type DeviceLine struct {
	Line   int    `json:"line"`
	UserID string `json:"user_id"`
}

// NewDevice is what a create needs.
type NewDevice struct {
	MAC   string
	Model string
	Label string
	Lines []DeviceLine
}

// DevicePatch lists the fields that may change; nil leaves one as it is.
// Lines replaces the whole assignment (an empty, non-nil slice clears it).
type DevicePatch struct {
	Model *string
	Label *string
	Lines *[]DeviceLine
}

// Fetch is one successful provisioning fetch, as recorded on the device.
type Fetch struct {
	MAC       string
	Source    string // client IP address
	UserAgent string
	Firmware  string
	Hash      string // hex SHA-256 of the body served
	// AccountID is the account whose URL key served the fetch. "" looks the
	// MAC up among the claims, which works only while one account claims it.
	AccountID string
	// OwnCredentials: the phone authenticated with the device's own
	// provisioning credentials (not the account's bootstrap credential); the
	// first such fetch sets Device.CredentialsConfirmedAt.
	OwnCredentials bool
}

const macRule = "must be 12 hex digits, optionally separated by ':' or '-'"

func validLabel(p map[string]string, label string) {
	if utf8.RuneCountInString(label) > 64 || strings.ContainsAny(label, "\r\n\x00") || !utf8.ValidString(label) {
		p["label"] = "must be at most 64 characters, without line breaks"
	}
}

// checkLines validates lines against the model and the account's users and
// returns them sorted by line number.
func (t *tx) checkLines(acct string, m Model, lines []DeviceLine) ([]DeviceLine, error) {
	out := append([]DeviceLine{}, lines...)
	sort.Slice(out, func(i, j int) bool { return out[i].Line < out[j].Line })
	for i, l := range out {
		if l.Line < 1 || l.Line > m.Accounts {
			return nil, invalid("lines", fmt.Sprintf("line %d is out of range: a %s has lines 1 to %d", l.Line, m.Name, m.Accounts))
		}
		if i > 0 && out[i-1].Line == l.Line {
			return nil, invalid("lines", fmt.Sprintf("line %d is assigned twice", l.Line))
		}
		if !validID(l.UserID) {
			return nil, invalid("lines", fmt.Sprintf("line %d: user_id is required", l.Line))
		}
		if _, err := t.user(acct, l.UserID); err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil, invalid("lines", fmt.Sprintf("line %d: user %s does not exist in this account", l.Line, l.UserID))
			}
			return nil, err
		}
	}
	return out, nil
}

func linesDetail(lines []DeviceLine) string {
	parts := make([]string, len(lines))
	for i, l := range lines {
		parts[i] = fmt.Sprintf("%d:%s", l.Line, l.UserID)
	}
	return strings.Join(parts, ",")
}

// CreateDevice adds a device to the account, with its own provisioning
// credentials. The MAC is normalised to 12 lower-case hex digits and must not
// be in this account yet (ErrExists otherwise); other accounts are not
// consulted, so the answer never says whether another account has the MAC
// (each account's claim is its own; docs/provisioning.md, "MAC claims"). The
// model must be in the model table; each line must be within the model's
// account count and name an existing user of the account.
func (db *DB) CreateDevice(accountID string, n NewDevice, actor Actor) (Device, error) {
	probs := map[string]string{}
	mac, ok := NormalizeMAC(n.MAC)
	if !ok {
		probs["mac"] = macRule
	}
	m, ok := LookupModel(n.Model)
	if !ok {
		probs["model"] = "must be a supported Yealink model, e.g. T54W"
	}
	n.Label = strings.TrimSpace(n.Label)
	validLabel(probs, n.Label)
	if len(probs) > 0 {
		return Device{}, &ValidationError{Problems: probs}
	}
	prov, err := db.newDeviceProv(accountID, mac)
	if err != nil {
		return Device{}, err
	}
	var d Device
	err = db.update(func(t *tx) error {
		if _, err := t.account(accountID); err != nil {
			return err
		}
		if t.Bucket(bDevices).Get([]byte(k(accountID, mac))) != nil {
			return fmt.Errorf("mac %s: %w", mac, ErrExists)
		}
		lines, err := t.checkLines(accountID, m, n.Lines)
		if err != nil {
			return err
		}
		d = Device{AccountID: accountID, MAC: mac, Model: m.Name, Label: n.Label, Lines: lines, CreatedAt: t.now, UpdatedAt: t.now}
		prov.RotatedAt = t.now
		if err := put(t.Bucket(bDevices), k(accountID, mac), deviceRecord{Device: d, Prov: &prov}); err != nil {
			return err
		}
		if err := t.claimMAC(mac, accountID); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "device.create", TargetKind: "device", TargetID: mac, TargetLabel: m.Name,
			Detail: map[string]string{"model": m.Name, "lines": linesDetail(lines)}})
	})
	if err != nil {
		return Device{}, fmt.Errorf("create device %s: %w", mac, err)
	}
	return d, nil
}

// putDevice writes d, keeping the credentials already stored with it.
func (t *tx) putDevice(d Device) error {
	rec, err := t.deviceRecord(d.AccountID, d.MAC)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	rec.Device = d
	return put(t.Bucket(bDevices), k(d.AccountID, d.MAC), rec)
}

func (t *tx) deviceRecord(acct, mac string) (deviceRecord, error) {
	var rec deviceRecord
	if err := get(t.Bucket(bDevices), k(acct, mac), &rec); err != nil {
		return deviceRecord{}, fmt.Errorf("device %s: %w", mac, err)
	}
	return rec, nil
}

func (t *tx) device(acct, mac string) (Device, error) {
	rec, err := t.deviceRecord(acct, mac)
	return rec.Device, err
}

// claimMAC records that acct has the MAC, rewriting a legacy single-owner
// index entry (mac → acct) into its per-account form.
func (t *tx) claimMAC(mac, acct string) error {
	b := t.Bucket(bDeviceMACs)
	if owner := b.Get([]byte(mac)); owner != nil {
		if err := b.Put([]byte(k(mac, string(owner))), append([]byte(nil), owner...)); err != nil {
			return err
		}
		if err := b.Delete([]byte(mac)); err != nil {
			return err
		}
	}
	return b.Put([]byte(k(mac, acct)), []byte(acct))
}

// unclaimMAC removes acct's claim on the MAC (in either index form).
func (t *tx) unclaimMAC(mac, acct string) error {
	b := t.Bucket(bDeviceMACs)
	if owner := b.Get([]byte(mac)); string(owner) == acct {
		if err := b.Delete([]byte(mac)); err != nil {
			return err
		}
	}
	return b.Delete([]byte(k(mac, acct)))
}

// macClaims lists the accounts that have the MAC, sorted.
func (t *tx) macClaims(mac string) []string {
	var out []string
	b := t.Bucket(bDeviceMACs)
	if owner := b.Get([]byte(mac)); owner != nil {
		out = append(out, string(owner))
	}
	_ = each(b, mac, func(_, v []byte) error {
		out = append(out, string(v))
		return nil
	})
	sort.Strings(out)
	return out
}

// MACClaim is one MAC and the accounts that added it as a device.
type MACClaim struct {
	MAC      string
	Accounts []string // sorted
}

// MACClaims is the provider's view of device MACs across accounts. With a
// MAC (any accepted form) it returns that MAC's claims (none: an empty
// slice); with "" every MAC that more than one account has added, by MAC.
// Two accounts may each add a MAC: each one's phone is served only through
// its own URL key, so a claim takes nothing from another account; the view
// lets the provider find out which account really has the phone.
func (db *DB) MACClaims(mac string) ([]MACClaim, error) {
	var out []MACClaim
	if mac != "" {
		m, ok := NormalizeMAC(mac)
		if !ok {
			return nil, invalid("mac", macRule)
		}
		err := db.view(func(t *tx) error {
			if accts := t.macClaims(m); len(accts) > 0 {
				out = append(out, MACClaim{MAC: m, Accounts: accts})
			}
			return nil
		})
		return out, err
	}
	err := db.view(func(t *tx) error {
		by := map[string][]string{}
		if err := t.Bucket(bDeviceMACs).ForEach(func(key, v []byte) error {
			m, _, _ := strings.Cut(string(key), "/")
			by[m] = append(by[m], string(v))
			return nil
		}); err != nil {
			return err
		}
		for m, accts := range by {
			if len(accts) > 1 {
				sort.Strings(accts)
				out = append(out, MACClaim{MAC: m, Accounts: accts})
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].MAC < out[j].MAC })
		return nil
	})
	return out, err
}

// Device returns one device of the account; mac may be in any accepted form.
func (db *DB) Device(accountID, mac string) (Device, error) {
	m, ok := NormalizeMAC(mac)
	if !ok {
		return Device{}, fmt.Errorf("device %s: %w", mac, ErrNotFound)
	}
	var d Device
	err := db.view(func(t *tx) error {
		var err error
		d, err = t.device(accountID, m)
		return err
	})
	return d, err
}

// DeviceByMAC finds a device by MAC alone, in whichever account has it.
// Several accounts may add the same MAC; then it answers ErrNotFound (the
// MAC names no single device): use Device with the account instead.
func (db *DB) DeviceByMAC(mac string) (Device, error) {
	m, ok := NormalizeMAC(mac)
	if !ok {
		return Device{}, fmt.Errorf("device %s: %w", mac, ErrNotFound)
	}
	var d Device
	err := db.view(func(t *tx) error {
		acct, err := t.soleClaim(m)
		if err != nil {
			return err
		}
		d, err = t.device(acct, m)
		return err
	})
	return d, err
}

// soleClaim is the one account that has the MAC; ErrNotFound when none or
// several do.
func (t *tx) soleClaim(mac string) (string, error) {
	switch accts := t.macClaims(mac); len(accts) {
	case 0:
		return "", fmt.Errorf("device %s: %w", mac, ErrNotFound)
	case 1:
		return accts[0], nil
	default:
		return "", fmt.Errorf("device %s is in %d accounts, name the account: %w", mac, len(accts), ErrNotFound)
	}
}

// Devices lists the account's devices, by MAC.
func (db *DB) Devices(accountID string) ([]Device, error) {
	var out []Device
	err := db.view(func(t *tx) error {
		if _, err := t.account(accountID); err != nil {
			return err
		}
		var err error
		out, err = t.devices(accountID)
		return err
	})
	return out, err
}

func (t *tx) devices(acct string) ([]Device, error) {
	var out []Device
	err := each(t.Bucket(bDevices), acct, func(_, v []byte) error {
		var d Device
		if err := decode(v, &d); err != nil {
			return err
		}
		out = append(out, d)
		return nil
	})
	return out, err
}

// DevicesOfUser lists the account's devices with a line assigned to the user.
// Call it before deleting a user: deletion clears their lines.
func (db *DB) DevicesOfUser(accountID, userID string) ([]Device, error) {
	var out []Device
	err := db.view(func(t *tx) error {
		all, err := t.devices(accountID)
		if err != nil {
			return err
		}
		for _, d := range all {
			for _, l := range d.Lines {
				if l.UserID == userID {
					out = append(out, d)
					break
				}
			}
		}
		return nil
	})
	return out, err
}

// UpdateDevice changes a device's model, label or lines. A model change
// re-checks the existing lines against the new model's limit.
func (db *DB) UpdateDevice(accountID, mac string, p DevicePatch, actor Actor) (Device, error) {
	probs := map[string]string{}
	var m Model
	if p.Model != nil {
		var ok bool
		if m, ok = LookupModel(*p.Model); !ok {
			probs["model"] = "must be a supported Yealink model, e.g. T54W"
		}
	}
	if p.Label != nil {
		*p.Label = strings.TrimSpace(*p.Label)
		validLabel(probs, *p.Label)
	}
	if len(probs) > 0 {
		return Device{}, &ValidationError{Problems: probs}
	}
	nmac, ok := NormalizeMAC(mac)
	if !ok {
		return Device{}, fmt.Errorf("update device %s: %w", mac, ErrNotFound)
	}
	var d Device
	err := db.update(func(t *tx) error {
		var err error
		if d, err = t.device(accountID, nmac); err != nil {
			return err
		}
		detail := map[string]string{}
		if p.Model != nil {
			detail["model"] = d.Model + " → " + m.Name
			d.Model = m.Name
		} else {
			m, _ = LookupModel(d.Model)
		}
		lines := d.Lines
		if p.Lines != nil {
			lines = *p.Lines
			detail["lines"] = linesDetail(lines)
		}
		if d.Lines, err = t.checkLines(accountID, m, lines); err != nil {
			return err
		}
		if p.Label != nil {
			d.Label = *p.Label
			detail["label"] = d.Label
		}
		d.UpdatedAt = t.now
		if err := t.putDevice(d); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "device.update", TargetKind: "device", TargetID: nmac, TargetLabel: d.Model, Detail: detail})
	})
	if err != nil {
		return Device{}, fmt.Errorf("update device %s: %w", nmac, err)
	}
	return d, nil
}

// DeleteDevice removes a device and its credentials, and the account's claim
// on the MAC.
func (db *DB) DeleteDevice(accountID, mac string, actor Actor) error {
	nmac, ok := NormalizeMAC(mac)
	if !ok {
		return fmt.Errorf("delete device %s: %w", mac, ErrNotFound)
	}
	err := db.update(func(t *tx) error {
		d, err := t.device(accountID, nmac)
		if err != nil {
			return err
		}
		if err := t.Bucket(bDevices).Delete([]byte(k(accountID, nmac))); err != nil {
			return err
		}
		if err := t.unclaimMAC(nmac, accountID); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "device.delete", TargetKind: "device", TargetID: nmac, TargetLabel: d.Model})
	})
	if err != nil {
		return fmt.Errorf("delete device %s: %w", nmac, err)
	}
	return nil
}

// RecordFetch stamps the device with a successful provisioning fetch. It is
// group-committed (phones poll), and audited only when the config served or
// the source changed, or when the phone used its own credentials for the
// first time, so the audit log shows every new config a phone received
// without one entry per poll.
func (db *DB) RecordFetch(f Fetch) error {
	mac, ok := NormalizeMAC(f.MAC)
	if !ok {
		return fmt.Errorf("record fetch %s: %w", f.MAC, ErrNotFound)
	}
	confirmed := false
	err := db.batch(func(t *tx) error {
		confirmed = false
		acct := f.AccountID
		if acct == "" {
			var err error
			if acct, err = t.soleClaim(mac); err != nil {
				return err
			}
		}
		d, err := t.device(acct, mac)
		if err != nil {
			return err
		}
		if f.OwnCredentials && d.CredentialsConfirmedAt.IsZero() {
			d.CredentialsConfirmedAt = t.now
			confirmed = true
			if err := t.audit(AuditEntry{AccountID: d.AccountID, Actor: Actor{Name: "provisioning", Role: "system", Source: f.Source},
				Action: "device.provisioning_credentials.confirmed", TargetKind: "device", TargetID: mac, TargetLabel: d.Model,
				Detail: map[string]string{"source": f.Source}}); err != nil {
				return err
			}
		}
		changed := d.LastConfigHash != f.Hash || d.LastSource != f.Source
		d.LastProvisionedAt = t.now
		d.LastSource = f.Source
		d.LastFirmware = f.Firmware
		d.LastUserAgent = f.UserAgent
		d.LastConfigHash = f.Hash
		if err := t.putDevice(d); err != nil {
			return err
		}
		if !changed {
			return nil
		}
		return t.audit(AuditEntry{AccountID: d.AccountID, Actor: Actor{Name: "provisioning", Role: "system", Source: f.Source},
			Action: "device.provisioned", TargetKind: "device", TargetID: mac, TargetLabel: d.Model,
			Detail: map[string]string{"config_sha256": f.Hash, "firmware": f.Firmware, "source": f.Source}})
	})
	if err != nil {
		return fmt.Errorf("record fetch %s: %w", mac, err)
	}
	if confirmed {
		// The bootstrap credential no longer opens this device: a change
		// that caches of devices (Generation) must see.
		db.gen.Add(1)
	}
	return nil
}

// unassignUserLines removes a deleted user's lines from every device of the
// account, so the next fetch renders those slots cleared
// (docs/account-model.md rule 12).
func unassignUserLines(t *tx, acct string, u User, actor Actor) error {
	all, err := t.devices(acct)
	if err != nil {
		return err
	}
	for _, d := range all {
		kept := d.Lines[:0:0]
		for _, l := range d.Lines {
			if l.UserID != u.ID {
				kept = append(kept, l)
			}
		}
		if len(kept) == len(d.Lines) {
			continue
		}
		d.Lines = kept
		d.UpdatedAt = t.now
		if err := t.putDevice(d); err != nil {
			return err
		}
		if err := t.audit(AuditEntry{AccountID: acct, Actor: actor, Action: "device.unassign_user", TargetKind: "device", TargetID: d.MAC, TargetLabel: d.Model,
			Detail: map[string]string{"user_id": u.ID, "user": u.Label(), "lines": linesDetail(d.Lines)}}); err != nil {
			return err
		}
	}
	return nil
}

// LineConfig is one assigned line as the provisioning server renders it.
// Active is false when the user is disabled or gone; the slot is then
// rendered cleared, and SIP is empty.
type LineConfig struct {
	Line   int
	UserID string
	User   User
	Active bool
	SIP    SIPCredentials
}

// DeviceConfig is everything needed to render one device's configuration,
// read in one transaction so the file is consistent.
type DeviceConfig struct {
	Account     Account
	Device      Device
	Model       Model
	Lines       []LineConfig // the device's assigned lines, by line number
	Credentials DeviceCredentials
}

// String never prints passwords.
func (c DeviceConfig) String() string {
	return fmt.Sprintf("DeviceConfig{Account:%s MAC:%s Model:%s Lines:%d}", c.Account.ID, c.Device.MAC, c.Model.Name, len(c.Lines))
}

// GoString hides passwords from %#v too.
func (c DeviceConfig) GoString() string { return c.String() }

// DeviceConfig reads the device mac of the account with its lines' users
// and SIP credentials (for the provisioning server; not audited).
func (db *DB) DeviceConfig(accountID, mac string) (DeviceConfig, error) {
	nmac, ok := NormalizeMAC(mac)
	if !ok {
		return DeviceConfig{}, fmt.Errorf("device %s: %w", mac, ErrNotFound)
	}
	var c DeviceConfig
	err := db.view(func(t *tx) error {
		var err error
		if c.Account, err = t.account(accountID); err != nil {
			return err
		}
		rec, err := t.deviceRecord(accountID, nmac)
		if err != nil {
			return err
		}
		c.Device = rec.Device
		if c.Credentials, err = t.openDeviceProv(rec); err != nil {
			return err
		}
		var ok bool
		if c.Model, ok = LookupModel(c.Device.Model); !ok {
			return fmt.Errorf("device %s has unknown model %q", nmac, c.Device.Model)
		}
		c.Lines = make([]LineConfig, 0, len(c.Device.Lines))
		for _, l := range c.Device.Lines {
			lc := LineConfig{Line: l.Line, UserID: l.UserID}
			sip, u, err := t.credentials(accountID, l.UserID)
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				return err
			default:
				lc.User = u
				if u.Status == StatusEnabled {
					lc.Active, lc.SIP = true, sip
				}
			}
			c.Lines = append(c.Lines, lc)
		}
		return nil
	})
	return c, err
}

// checkDevices is a checkHooks entry: every device's MAC is claimed by its
// account, every claim has its device, every line names an existing user
// within the model's limit.
func checkDevices(t *tx, userExists func(acct, id string) bool) []error {
	var problems []error
	_ = t.Bucket(bDevices).ForEach(func(key, v []byte) error {
		var d Device
		if err := decode(v, &d); err != nil {
			problems = append(problems, fmt.Errorf("device %s: %w", key, err))
			return nil
		}
		if !slices.Contains(t.macClaims(d.MAC), d.AccountID) {
			problems = append(problems, fmt.Errorf("device %s: MAC not claimed by account %q", key, d.AccountID))
		}
		m, ok := LookupModel(d.Model)
		if !ok {
			problems = append(problems, fmt.Errorf("device %s: unknown model %q", key, d.Model))
		}
		for _, l := range d.Lines {
			if !userExists(d.AccountID, l.UserID) {
				problems = append(problems, fmt.Errorf("device %s line %d: missing user %s", key, l.Line, l.UserID))
			}
			if ok && (l.Line < 1 || l.Line > m.Accounts) {
				problems = append(problems, fmt.Errorf("device %s: line %d beyond a %s's %d", key, l.Line, m.Name, m.Accounts))
			}
		}
		return nil
	})
	_ = t.Bucket(bDeviceMACs).ForEach(func(key, acct []byte) error {
		mac, _, _ := strings.Cut(string(key), "/")
		if t.Bucket(bDevices).Get([]byte(k(string(acct), mac))) == nil {
			problems = append(problems, fmt.Errorf("MAC index %s points at missing device in %s", mac, acct))
		}
		return nil
	})
	return problems
}

// DeviceBindings returns the live bindings that are this device's own
// registrations, for sending it a check-sync NOTIFY: a binding whose MAC (from
// a SIP User-Agent that carries one) or +sip.instance UUID (Yealink ends it
// with the MAC) names the device, or a Yealink binding of a user on one of
// the device's lines whose source IP is where the device last fetched its
// config from. A user's softphones elsewhere never match.
func (db *DB) DeviceBindings(accountID, mac string) ([]Binding, error) {
	nmac, ok := NormalizeMAC(mac)
	if !ok {
		return nil, fmt.Errorf("device %s: %w", mac, ErrNotFound)
	}
	var out []Binding
	err := db.view(func(t *tx) error {
		d, err := t.device(accountID, nmac)
		if err != nil {
			return err
		}
		onLine := map[string]bool{}
		for _, l := range d.Lines {
			onLine[l.UserID] = true
		}
		return each(t.Bucket(bBindings), accountID, func(_, v []byte) error {
			var b Binding
			if err := decodeBinding(v, &b); err != nil {
				return nil
			}
			if t.db.refresh.applyOne(&b); !b.Live(t.now) {
				return nil
			}
			host, _, err := net.SplitHostPort(b.Source)
			if err != nil {
				host = b.Source
			}
			inst := strings.ToLower(strings.NewReplacer("-", "", ":", "").Replace(b.InstanceID))
			switch {
			case b.MAC == nmac,
				inst != "" && strings.Contains(inst, nmac),
				onLine[b.UserID] && d.LastSource != "" && host == d.LastSource && strings.HasPrefix(strings.ToLower(b.UserAgent), "yealink"):
				out = append(out, b)
			}
			return nil
		})
	})
	return out, err
}

// DeviceCredentials are a device's own provisioning credentials: what its
// <mac>.cfg carries (static.auto_provision.server.username/.password) and
// what it authenticates its fetches with. Only that device's files open with
// them (docs/provisioning.md, "Credentials").
type DeviceCredentials struct {
	MAC       string
	Username  string
	Password  string
	RotatedAt time.Time
	// PreviousPassword stays valid until PreviousUntil after a rotation, so
	// the phone can fetch (with it) the file carrying the new one.
	PreviousPassword string
	PreviousUntil    time.Time
}

// String never prints the passwords.
func (c DeviceCredentials) String() string {
	return fmt.Sprintf("DeviceCredentials{MAC:%s Username:%s Password:[redacted]}", c.MAC, c.Username)
}

// GoString hides the passwords from %#v too.
func (c DeviceCredentials) GoString() string { return c.String() }

// Passwords are the passwords that authenticate the device now: the current
// one, and the previous one within its grace period. None when the device has
// no credentials yet (created before devices had their own).
func (c DeviceCredentials) Passwords() []string {
	var out []string
	if c.Password != "" {
		out = append(out, c.Password)
	}
	if c.PreviousPassword != "" {
		out = append(out, c.PreviousPassword)
	}
	return out
}

// DeviceUsernameMAC returns the MAC a device provisioning username names.
// Usernames are "<mac>-<10 random characters>", so the provisioning server
// finds the device a request authenticates as without an index.
func DeviceUsernameMAC(username string) (string, bool) {
	mac, rest, ok := strings.Cut(username, "-")
	if !ok || len(mac) != 12 || len(rest) != 10 {
		return "", false
	}
	m, ok := NormalizeMAC(mac)
	if !ok || m != mac {
		return "", false
	}
	return m, true
}

// newDeviceProv draws and seals fresh credentials for a device (outside any
// transaction: sealing is the slow part), bound to the device's record.
func (db *DB) newDeviceProv(acct, mac string) (deviceProv, error) {
	pw, err := newPassword()
	if err != nil {
		return deviceProv{}, err
	}
	sealed, err := db.seal(pw, deviceAD(acct, mac))
	if err != nil {
		return deviceProv{}, err
	}
	return deviceProv{Username: newID(mac), PasswordSealed: sealed}, nil
}

// deviceAD binds a device's sealed provisioning password to its record.
func deviceAD(acct, mac string) []byte { return secretAD("device_password", acct, mac) }

// openDeviceProv unseals a device's credentials; the previous password only
// while it is within its grace period. A device without credentials gives
// zero credentials (no passwords), not an error.
func (t *tx) openDeviceProv(rec deviceRecord) (DeviceCredentials, error) {
	c := DeviceCredentials{MAC: rec.MAC}
	p := rec.Prov
	if p == nil {
		return c, nil
	}
	c.Username, c.RotatedAt = p.Username, p.RotatedAt
	ad := deviceAD(rec.AccountID, rec.MAC)
	var err error
	if c.Password, err = t.db.open(p.PasswordSealed, ad); err != nil {
		return DeviceCredentials{}, err
	}
	if len(p.PrevPasswordSealed) > 0 && p.PrevUntil.After(t.now) {
		if c.PreviousPassword, err = t.db.open(p.PrevPasswordSealed, ad); err != nil {
			return DeviceCredentials{}, err
		}
		c.PreviousUntil = p.PrevUntil
	}
	return c, nil
}

// DeviceAuth reads a device and its credentials for the provisioning
// server's authentication (the hot path: not audited). An unknown device
// costs about the same work as a known one.
func (db *DB) DeviceAuth(accountID, mac string) (Device, DeviceCredentials, error) {
	nmac, ok := NormalizeMAC(mac)
	if !ok {
		return Device{}, DeviceCredentials{}, fmt.Errorf("device %s: %w", mac, ErrNotFound)
	}
	var (
		d Device
		c DeviceCredentials
	)
	err := db.view(func(t *tx) error {
		rec, err := t.deviceRecord(accountID, nmac)
		if errors.Is(err, ErrNotFound) {
			// Cost what a known device costs: decode a record and open a
			// sealed password of the same length (the account's bootstrap
			// one), so the answer's timing says nothing about the MAC.
			var pr provisioningRecord
			if get(t.Bucket(bProvisioning), accountID, &pr) == nil {
				_, _ = t.db.open(pr.PasswordSealed, provPasswordAD(accountID))
			}
			return err
		}
		if err != nil {
			return err
		}
		d = rec.Device
		c, err = t.openDeviceProv(rec)
		return err
	})
	return d, c, err
}

// DeviceProvisioningCredentials returns the device's own provisioning
// credentials and audits the read (it shows a password). A device created
// before devices had their own credentials gets them now.
func (db *DB) DeviceProvisioningCredentials(accountID, mac string, actor Actor) (DeviceCredentials, error) {
	return db.deviceCredentials(accountID, mac, actor, credRead)
}

// RotateDeviceProvisioningCredentials gives the device a new provisioning
// password. The previous one keeps working for ProvisioningGrace, so the
// phone fetches (with it) the file that carries the new one; a check-sync
// makes that happen at once.
func (db *DB) RotateDeviceProvisioningCredentials(accountID, mac string, actor Actor) (DeviceCredentials, error) {
	return db.deviceCredentials(accountID, mac, actor, credRotate)
}

// ReopenDeviceBootstrap lets the account's bootstrap credential open the
// device's file again, as before its first fetch with its own credentials:
// for a phone that was factory-reset and knows only what DHCP or RPS tells
// it. Its first fetch with its own credentials closes it again. Audited.
func (db *DB) ReopenDeviceBootstrap(accountID, mac string, actor Actor) (Device, error) {
	nmac, ok := NormalizeMAC(mac)
	if !ok {
		return Device{}, fmt.Errorf("device %s: %w", mac, ErrNotFound)
	}
	var d Device
	err := db.update(func(t *tx) error {
		var err error
		if d, err = t.device(accountID, nmac); err != nil {
			return err
		}
		d.CredentialsConfirmedAt = time.Time{}
		d.UpdatedAt = t.now
		if err := t.putDevice(d); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "device.provisioning_bootstrap.reopen", TargetKind: "device", TargetID: nmac, TargetLabel: d.Model})
	})
	if err != nil {
		return Device{}, fmt.Errorf("reopen bootstrap for device %s: %w", nmac, err)
	}
	return d, nil
}

// EnsureDeviceCredentials gives a device created before devices had their own
// provisioning credentials a set (audited as the provisioning server's); a
// device that has them is left alone.
func (db *DB) EnsureDeviceCredentials(accountID, mac string) error {
	_, err := db.deviceCredentials(accountID, mac, Actor{Name: "provisioning", Role: "system"}, credEnsure)
	return err
}

type credOp int

const (
	credRead   credOp = iota // show them (audited), creating them if missing
	credRotate               // new password, previous one kept for the grace period
	credEnsure               // create them if missing, nothing else
)

func (db *DB) deviceCredentials(accountID, mac string, actor Actor, op credOp) (DeviceCredentials, error) {
	nmac, ok := NormalizeMAC(mac)
	if !ok {
		return DeviceCredentials{}, fmt.Errorf("device %s: %w", mac, ErrNotFound)
	}
	fresh, err := db.newDeviceProv(accountID, nmac)
	if err != nil {
		return DeviceCredentials{}, err
	}
	var c DeviceCredentials
	err = db.update(func(t *tx) error {
		rec, err := t.deviceRecord(accountID, nmac)
		if err != nil {
			return err
		}
		entry := func(action string, detail map[string]string) error {
			return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: action, TargetKind: "device", TargetID: nmac, TargetLabel: rec.Model, Detail: detail})
		}
		changed := false
		switch {
		case rec.Prov == nil:
			fresh.RotatedAt = t.now
			rec.Prov, changed = &fresh, true
			if err := entry("device.provisioning_credentials.create", nil); err != nil {
				return err
			}
		case op == credRotate:
			p := *rec.Prov
			p.PrevPasswordSealed, p.PrevUntil = p.PasswordSealed, t.now.Add(ProvisioningGrace)
			p.PasswordSealed, p.RotatedAt = fresh.PasswordSealed, t.now
			rec.Prov, changed = &p, true
			if err := entry("device.provisioning_credentials.rotate", map[string]string{"previous_valid_until": p.PrevUntil.UTC().Format(time.RFC3339)}); err != nil {
				return err
			}
		}
		if changed {
			if err := put(t.Bucket(bDevices), k(accountID, nmac), rec); err != nil {
				return err
			}
		}
		if op == credEnsure {
			return nil
		}
		if c, err = t.openDeviceProv(rec); err != nil {
			return err
		}
		if op == credRotate {
			return nil // the rotation's entry covers showing the new password
		}
		return entry("device.provisioning_credentials.read", nil)
	})
	if err != nil {
		return DeviceCredentials{}, fmt.Errorf("provisioning credentials of device %s: %w", nmac, err)
	}
	return c, nil
}
