package provisioning

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/template"

	"github.com/dialtone-voip/dialtone/store"
)

//go:embed templates/*.tmpl
var templateFS embed.FS

var templates = template.Must(template.New("").Option("missingkey=error").ParseFS(templateFS, "templates/*.tmpl"))

// macData is what templates/mac.tmpl renders. Every field is already
// validated to be a single line, so text/template needs no escaping.
type macData struct {
	Model, MAC              string
	URL, Username, Password string
	RepeatMinutes           int
	NTPServer, TimeZone     string
	Accounts                []accountData
	Overrides               []keyValue
}

type accountData struct {
	N                                      int
	Active                                 bool
	Label, DisplayName, AuthName, UserName string
	Password                               string
	Server, Proxy                          string
	Port, Transport, Expires               int
}

type keyValue struct{ Key, Value string }

// sipSettings are the deployment's registrar settings rendered into every account.
type sipSettings struct {
	Proxy     string // outbound proxy host; "" when phones reach the domain directly
	Port      int
	Transport int // Yealink transport_type: 0 UDP, 1 TCP, 2 TLS
	Expires   int
}

// renderMAC renders a device's <mac>.cfg: one account block per slot up to
// the model's maximum, active for lines whose user is enabled, cleared
// (enable = 0, %NULL% values; docs/provisioning.md, "What Yealink handsets do") for every other slot, so a slot freed
// by disabling, deleting or reassigning its user is reset on the phone. The
// output depends only on its inputs: same data, same bytes. cleared reports
// whether an assigned line was cleared or the phone has no active line.
func renderMAC(c store.DeviceConfig, overrides map[string]string, url string, sip sipSettings, repeatMinutes int, ntp, tz string) (body []byte, cleared bool, err error) {
	d, cleared := macInputs(c, overrides, url, sip, repeatMinutes, ntp, tz)
	body, err = d.render()
	return body, cleared, err
}

// macInputs gathers everything mac.tmpl renders; cleared is as for renderMAC.
// The provisioning credentials rendered are the device's own (c.Credentials),
// never the account's: one phone's file opens no other phone's.
func macInputs(c store.DeviceConfig, overrides map[string]string, url string, sip sipSettings, repeatMinutes int, ntp, tz string) (d macData, cleared bool) {
	d = macData{
		Model: c.Model.Name, MAC: c.Device.MAC,
		URL: url, Username: c.Credentials.Username, Password: c.Credentials.Password,
		RepeatMinutes: repeatMinutes, NTPServer: ntp, TimeZone: tz,
		Accounts: make([]accountData, c.Model.Accounts),
	}
	for i := range d.Accounts {
		d.Accounts[i].N = i + 1
	}
	active := 0
	for _, l := range c.Lines {
		if l.Line < 1 || l.Line > c.Model.Accounts {
			continue // the store refuses these; never render beyond the model
		}
		if !l.Active {
			cleared = true
			continue
		}
		active++
		label := l.User.Name
		if label == "" {
			label = l.User.Extension
		}
		d.Accounts[l.Line-1] = accountData{
			N: l.Line, Active: true,
			// The label is the user's name; everything else is the extension,
			// so renaming a user changes one line of the file (acceptance check 7).
			Label: label, DisplayName: l.SIP.Username, AuthName: l.SIP.Username, UserName: l.SIP.Username,
			Password: l.SIP.Password,
			Server:   c.Account.SIPDomain, Proxy: sip.Proxy,
			Port: sip.Port, Transport: sip.Transport, Expires: sip.Expires,
		}
	}
	if active == 0 {
		cleared = true
	}
	keys := make([]string, 0, len(overrides))
	for k := range overrides {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		d.Overrides = append(d.Overrides, keyValue{k, overrides[k]})
	}
	return d, cleared
}

func (d *macData) render() ([]byte, error) {
	var b bytes.Buffer
	b.Grow(256 + 900*len(d.Accounts))
	if err := templates.ExecuteTemplate(&b, "mac.tmpl", d); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// key is a canonical encoding of every input of the rendering: two macData
// with the same key render the same bytes (render is deterministic).
// Fields are length-prefixed, so no value can imitate a separator.
func (d *macData) key() string {
	var b strings.Builder
	str := func(s string) { b.WriteString(strconv.Itoa(len(s))); b.WriteByte(':'); b.WriteString(s) }
	num := func(n int) { b.WriteString(strconv.Itoa(n)); b.WriteByte(';') }
	for _, s := range []string{d.Model, d.MAC, d.URL, d.Username, d.Password, d.NTPServer, d.TimeZone} {
		str(s)
	}
	num(d.RepeatMinutes)
	num(len(d.Accounts))
	for _, a := range d.Accounts {
		num(a.N)
		if a.Active {
			num(1)
		} else {
			num(0)
		}
		for _, s := range []string{a.Label, a.DisplayName, a.AuthName, a.UserName, a.Password, a.Server, a.Proxy} {
			str(s)
		}
		num(a.Port)
		num(a.Transport)
		num(a.Expires)
	}
	num(len(d.Overrides))
	for _, kv := range d.Overrides {
		str(kv.Key)
		str(kv.Value)
	}
	return b.String()
}

// renderCache keeps each device's last rendered body with the key of its
// inputs: a phone that polls with nothing changed is served without running
// the template again. Bounded: past maxCached devices it starts over.
type renderCache struct {
	mu sync.Mutex
	m  map[string]cachedBody // by MAC
}

type cachedBody struct {
	key  string
	body []byte
	sum  [sha256.Size]byte // of body: the ETag and the fetch record's hash
}

const maxCached = 100_000

// render returns d's body and its SHA-256, from the cache when d's inputs
// are those of the device's last rendering.
func (c *renderCache) render(d *macData) ([]byte, [sha256.Size]byte, error) {
	key := d.key()
	c.mu.Lock()
	hit, ok := c.m[d.MAC]
	c.mu.Unlock()
	if ok && hit.key == key {
		return hit.body, hit.sum, nil
	}
	body, err := d.render()
	if err != nil {
		return nil, [sha256.Size]byte{}, err
	}
	entry := cachedBody{key: key, body: body, sum: sha256.Sum256(body)}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCached {
		c.m = map[string]cachedBody{}
	}
	c.m[d.MAC] = entry
	c.mu.Unlock()
	return body, entry.sum, nil
}

// renderCommon renders y0000000000XX.cfg: the header and a comment, nothing
// account-specific and no credentials (a file shared by every tenant's
// phones of a model cannot carry a key or a password).
func renderCommon(file string) ([]byte, error) {
	var b bytes.Buffer
	if err := templates.ExecuteTemplate(&b, "common.tmpl", struct{ File string }{file}); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// singleLine reports whether s is safe as a config value.
func singleLine(s string) bool { return !strings.ContainsAny(s, "\r\n\x00") }
