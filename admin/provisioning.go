package admin

import (
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/store"
)

// provisioningJSON is what to configure on a phone (or in DHCP option 66 /
// RPS): the URL with the account's secret key, and the account's bootstrap
// credential. The bootstrap credential opens only devices that have never
// fetched with their own credentials (GET /devices/{mac}/provisioning-
// credentials); the first file a phone gets moves it onto its own.
// previous_password_expires_at is set while the previous key and password
// still work after a rotation. tls is whether phones fetch over HTTPS (the
// URL's scheme); warnings says what is unsafe about the setup.
type provisioningJSON struct {
	URL                       string            `json:"url"`
	Username                  string            `json:"username"`
	Password                  string            `json:"password"`
	RotatedAt                 string            `json:"rotated_at" format:"date-time"`
	PreviousPasswordExpiresAt *string           `json:"previous_password_expires_at,omitempty" format:"date-time"`
	Overrides                 map[string]string `json:"overrides"`
	TLS                       bool              `json:"tls"`
	Warnings                  []string          `json:"warnings"`
}

// warnPlainHTTP is the warning GET /provisioning gives when phones fetch
// their files, which carry SIP passwords, over plain HTTP.
const warnPlainHTTP = "phones fetch files with SIP passwords over plain HTTP; configure --tls-cert/--tls-key"

// overridesJSON is the account's extra config keys, appended to every phone's
// file.
type overridesJSON struct {
	Overrides map[string]string `json:"overrides"`
}

func (s *server) provisioningOut(p store.ProvisioningSettings) provisioningJSON {
	url := "/p/" + p.Key + "/"
	if s.provURL != nil {
		url = s.provURL(p.Key)
	}
	out := provisioningJSON{URL: url, Username: p.Username, Password: p.Password, RotatedAt: rfc3339(p.RotatedAt), Overrides: p.Overrides,
		TLS: strings.HasPrefix(strings.ToLower(url), "https://"), Warnings: []string{}}
	if !out.TLS {
		out.Warnings = append(out.Warnings, warnPlainHTTP)
	}
	if out.Overrides == nil {
		out.Overrides = map[string]string{}
	}
	if !p.PreviousUntil.IsZero() {
		t := rfc3339(p.PreviousUntil)
		out.PreviousPasswordExpiresAt = &t
	}
	return out
}

func (s *server) getProvisioning(c *gin.Context) error {
	p, err := s.db.ProvisioningSettings(c.Param("account"), actor(c))
	if err != nil {
		return err
	}
	c.Header("Cache-Control", "no-store")
	return reply(c, s.provisioningOut(p))
}

func (s *server) rotateProvisioning(c *gin.Context) error {
	p, err := s.db.RotateProvisioning(c.Param("account"), actor(c))
	if err != nil {
		return err
	}
	c.Header("Cache-Control", "no-store")
	return reply(c, s.provisioningOut(p))
}

func (s *server) setProvisioningOverrides(c *gin.Context) error {
	var in overridesJSON
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	if in.Overrides == nil {
		return errInvalid("overrides", `"overrides" is required: an object of key → value ({} clears them)`)
	}
	o, err := s.db.SetProvisioningOverrides(c.Param("account"), in.Overrides, actor(c))
	if err != nil {
		return err
	}
	return reply(c, overridesJSON{Overrides: o})
}
