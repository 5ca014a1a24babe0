package store

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

var (
	bDevices    = []byte("devices")     // acct/mac → Device
	bDeviceMACs = []byte("device_macs") // mac → account id (a MAC belongs to one account)
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

// CreateDevice adds a device to the account. The MAC is normalised to 12
// lower-case hex digits and must be unused in every account (ErrExists
// otherwise); the model must be in the model table; each line must be within
// the model's account count and name an existing user of the account.
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
	var d Device
	err := db.update(func(t *tx) error {
		if _, err := t.account(accountID); err != nil {
			return err
		}
		if t.Bucket(bDeviceMACs).Get([]byte(mac)) != nil {
			return fmt.Errorf("mac %s: %w", mac, ErrExists)
		}
		lines, err := t.checkLines(accountID, m, n.Lines)
		if err != nil {
			return err
		}
		d = Device{AccountID: accountID, MAC: mac, Model: m.Name, Label: n.Label, Lines: lines, CreatedAt: t.now, UpdatedAt: t.now}
		if err := t.putDevice(d); err != nil {
			return err
		}
		if err := t.Bucket(bDeviceMACs).Put([]byte(mac), []byte(accountID)); err != nil {
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

func (t *tx) putDevice(d Device) error {
	return put(t.Bucket(bDevices), k(d.AccountID, d.MAC), d)
}

func (t *tx) device(acct, mac string) (Device, error) {
	var d Device
	if err := get(t.Bucket(bDevices), k(acct, mac), &d); err != nil {
		return Device{}, fmt.Errorf("device %s: %w", mac, err)
	}
	return d, nil
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

// DeviceByMAC finds a device in whichever account holds it.
func (db *DB) DeviceByMAC(mac string) (Device, error) {
	m, ok := NormalizeMAC(mac)
	if !ok {
		return Device{}, fmt.Errorf("device %s: %w", mac, ErrNotFound)
	}
	var d Device
	err := db.view(func(t *tx) error {
		acct := t.Bucket(bDeviceMACs).Get([]byte(m))
		if acct == nil {
			return fmt.Errorf("device %s: %w", m, ErrNotFound)
		}
		var err error
		d, err = t.device(string(acct), m)
		return err
	})
	return d, err
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

// DeleteDevice removes a device; its MAC becomes free for any account.
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
		if err := t.Bucket(bDeviceMACs).Delete([]byte(nmac)); err != nil {
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
// the source changed, so the audit log shows every new config a phone
// received without one entry per poll.
func (db *DB) RecordFetch(f Fetch) error {
	mac, ok := NormalizeMAC(f.MAC)
	if !ok {
		return fmt.Errorf("record fetch %s: %w", f.MAC, ErrNotFound)
	}
	err := db.batch(func(t *tx) error {
		acct := t.Bucket(bDeviceMACs).Get([]byte(mac))
		if acct == nil {
			return fmt.Errorf("device %s: %w", mac, ErrNotFound)
		}
		d, err := t.device(string(acct), mac)
		if err != nil {
			return err
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
	return nil
}

// unassignUserLines removes a deleted user's lines from every device of the
// account, so the next fetch renders those slots cleared (API rule 12).
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
	Account Account
	Device  Device
	Model   Model
	Lines   []LineConfig // the device's assigned lines, by line number
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
		if c.Device, err = t.device(accountID, nmac); err != nil {
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

// checkDevices is a checkHooks entry: every device's MAC is indexed to its
// account, every index entry has its device, every line names an existing
// user within the model's limit.
func checkDevices(t *tx, userExists func(acct, id string) bool) []error {
	var problems []error
	_ = t.Bucket(bDevices).ForEach(func(key, v []byte) error {
		var d Device
		if err := decode(v, &d); err != nil {
			problems = append(problems, fmt.Errorf("device %s: %w", key, err))
			return nil
		}
		if owner := t.Bucket(bDeviceMACs).Get([]byte(d.MAC)); string(owner) != d.AccountID {
			problems = append(problems, fmt.Errorf("device %s: MAC indexed to account %q", key, owner))
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
	_ = t.Bucket(bDeviceMACs).ForEach(func(mac, acct []byte) error {
		if t.Bucket(bDevices).Get([]byte(k(string(acct), string(mac)))) == nil {
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
			if err := decode(v, &b); err != nil || !b.Live(t.now) {
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
