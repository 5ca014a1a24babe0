package provisioning

import (
	"bytes"
	"embed"
	"sort"
	"strings"
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
// (enable = 0, %NULL% values; notes §4) for every other slot, so a slot freed
// by disabling, deleting or reassigning its user is reset on the phone. The
// output depends only on its inputs: same data, same bytes. cleared reports
// whether an assigned line was cleared or the phone has no active line.
func renderMAC(c store.DeviceConfig, prov store.ProvisioningSettings, url string, sip sipSettings, repeatMinutes int, ntp, tz string) (body []byte, cleared bool, err error) {
	d := macData{
		Model: c.Model.Name, MAC: c.Device.MAC,
		URL: url, Username: prov.Username, Password: prov.Password,
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
			// so renaming a user changes one line of the file (notes §7.7).
			Label: label, DisplayName: l.SIP.Username, AuthName: l.SIP.Username, UserName: l.SIP.Username,
			Password: l.SIP.Password,
			Server:   c.Account.SIPDomain, Proxy: sip.Proxy,
			Port: sip.Port, Transport: sip.Transport, Expires: sip.Expires,
		}
	}
	if active == 0 {
		cleared = true
	}
	keys := make([]string, 0, len(prov.Overrides))
	for k := range prov.Overrides {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		d.Overrides = append(d.Overrides, keyValue{k, prov.Overrides[k]})
	}
	var b bytes.Buffer
	b.Grow(256 + 900*len(d.Accounts))
	if err := templates.ExecuteTemplate(&b, "mac.tmpl", d); err != nil {
		return nil, false, err
	}
	return b.Bytes(), cleared, nil
}

// renderCommon renders y0000000000XX.cfg: the header and a comment, nothing
// account-specific and no credentials (notes §1: a key shared by every
// tenant's phones cannot live in it; wazo serves none at all).
func renderCommon(file string) ([]byte, error) {
	var b bytes.Buffer
	if err := templates.ExecuteTemplate(&b, "common.tmpl", struct{ File string }{file}); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// singleLine reports whether s is safe as a config value.
func singleLine(s string) bool { return !strings.ContainsAny(s, "\r\n\x00") }
