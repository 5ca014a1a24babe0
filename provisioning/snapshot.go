package provisioning

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/dialtone-voip/dialtone/store"
)

// snapshots keep what the request path needs from the store, so a poll
// reads no record, decodes no JSON and unseals no secret: per URL key the
// account's access (its bootstrap credential, settings and overrides), and
// per device its credentials, its state and its rendered file with the ETag.
//
// An entry is current while the store's Generation is the one read before
// the entry was built (every committed change to an account, user, device,
// credential or setting moves it, and so does the fetch that confirms a
// device's own credentials) and until the first instant at which the passing
// of time changes it (the end of a grace period of a previous key or
// password). Otherwise it is built again from the store on its next use; the
// render cache then skips the template when the file's inputs are unchanged.
//
// Devices that do not exist are remembered too, so after the first request
// a known and an unknown MAC cost the same map lookup.
type snapshots struct {
	db *store.DB

	mu      sync.RWMutex
	keys    map[string]*keySnap // by URL key (current or previous)
	devices map[deviceID]*deviceSnap
}

// maxSnapshots bounds each map; past it the map starts over (entries are
// rebuilt on use). Unknown keys are never remembered, and unknown devices
// only after valid credentials or the throttle's count, so a scanner cannot
// fill the maps faster than it is blocked.
const maxSnapshots = maxCached // as the render cache: the bodies are the same slices

// deviceID names a device: its account and MAC.
type deviceID struct{ acct, mac string }

type keySnap struct {
	gen   uint64
	until time.Time // zero: no time-based change
	acc   store.ProvisioningAccess
	url   string // the account's provisioning URL (current key)
}

// deviceSnap is one device as the request path sees it. exists false: the
// account has no such device (the other fields are zero).
type deviceSnap struct {
	gen    uint64
	until  time.Time
	exists bool
	// legacy: a device added before devices had their own credentials,
	// not given any yet (body is empty, access has no username).
	legacy bool

	device store.Device
	// access is the device's own credential (username, current and, within
	// its grace period, previous password) for authenticate.
	access store.ProvisioningAccess

	body    []byte
	sum     [sha256.Size]byte
	etag    []string // `"<first 16 bytes of sum, hex>"`, as a header value
	length  []string // len(body), as a header value
	hash    string   // hex of sum, for the fetch record
	cleared bool
}

func newSnapshots(db *store.DB) *snapshots {
	return &snapshots{db: db, keys: map[string]*keySnap{}, devices: map[deviceID]*deviceSnap{}}
}

func current(gen, now uint64, until time.Time, t time.Time) bool {
	return gen == now && (until.IsZero() || t.Before(until))
}

// account resolves a URL key (store.AccountByProvisioningKey, remembered).
func (s *snapshots) account(key string, urlOf func(string) string) (*keySnap, error) {
	gen := s.db.Generation()
	s.mu.RLock()
	e := s.keys[key]
	s.mu.RUnlock()
	if e != nil && current(e.gen, gen, e.until, s.db.Now()) {
		return e, nil
	}
	acc, err := s.db.AccountByProvisioningKey(key)
	if err != nil {
		return nil, err
	}
	e = &keySnap{gen: gen, acc: acc, url: urlOf(acc.Settings.Key), until: acc.Settings.PreviousUntil}
	s.mu.Lock()
	if len(s.keys) >= maxSnapshots {
		s.keys = map[string]*keySnap{}
	}
	s.keys[key] = e
	s.mu.Unlock()
	return e, nil
}

// device returns the account's device mac as of now, building its snapshot
// (and rendering its file) when the one kept is no longer current. ensure
// gives a legacy device its credentials (a write): only for a request that
// has authenticated, never to resolve a username.
func (s *snapshots) device(h *Handler, k *keySnap, mac string, ensure bool) (*deviceSnap, error) {
	id := deviceID{k.acc.Account.ID, mac}
	gen := s.db.Generation()
	s.mu.RLock()
	e := s.devices[id]
	s.mu.RUnlock()
	if e != nil && current(e.gen, gen, e.until, s.db.Now()) && !(e.legacy && ensure) {
		return e, nil
	}
	e, err := s.build(h, k, mac, gen, ensure)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if len(s.devices) >= maxSnapshots {
		s.devices = map[deviceID]*deviceSnap{}
	}
	s.devices[id] = e
	s.mu.Unlock()
	return e, nil
}

func (s *snapshots) build(h *Handler, k *keySnap, mac string, gen uint64, ensure bool) (*deviceSnap, error) {
	acct := k.acc.Account.ID
	dc, err := s.db.DeviceConfig(acct, mac)
	if errors.Is(err, store.ErrNotFound) {
		return &deviceSnap{gen: gen}, nil
	}
	if err != nil {
		return nil, err
	}
	if dc.Credentials.Username == "" && !ensure {
		return &deviceSnap{gen: gen, exists: true, legacy: true, device: dc.Device,
			access: store.ProvisioningAccess{Account: k.acc.Account, Settings: k.acc.Settings}}, nil
	}
	if dc.Credentials.Username == "" {
		// A device added before devices had their own credentials: give
		// it a set now, so its file moves it onto them. (This write moves
		// the generation; the snapshot below is of the state after it.)
		if err := s.db.EnsureDeviceCredentials(acct, mac); err != nil {
			return nil, err
		}
		gen = s.db.Generation()
		if dc, err = s.db.DeviceConfig(acct, mac); err != nil {
			return nil, err
		}
	}
	d, cleared := macInputs(dc, k.acc.Settings.Overrides, k.url, h.sip, h.repeat, h.ntp, h.tz)
	body, sum, err := h.rendered.render(&d)
	if err != nil {
		return nil, err
	}
	return &deviceSnap{
		gen: gen, until: dc.Credentials.PreviousUntil, exists: true,
		device: dc.Device,
		access: store.ProvisioningAccess{Account: k.acc.Account, Settings: k.acc.Settings,
			Username: dc.Credentials.Username, Passwords: dc.Credentials.Passwords()},
		body: body, sum: sum, cleared: cleared,
		etag:   []string{`"` + hex.EncodeToString(sum[:16]) + `"`},
		length: []string{strconv.Itoa(len(body))},
		hash:   hex.EncodeToString(sum[:]),
	}, nil
}
