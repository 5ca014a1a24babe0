package admin

import (
	"context"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/store"
)

// credentialsJSON is what a phone needs to register as the user. It is only
// ever the whole body of the sip-credentials routes, never part of a list.
type credentialsJSON struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Realm    string `json:"realm"`
	Domain   string `json:"domain"`
}

func credentialsOut(cr store.SIPCredentials) credentialsJSON {
	return credentialsJSON{Username: cr.Username, Password: cr.Password, Realm: cr.Realm, Domain: cr.Domain}
}

func (s *server) sipCredentials(c *gin.Context) error {
	cr, err := s.db.SIPCredentials(c.Param("account"), c.Param("id"), actor(c))
	if err != nil {
		return err
	}
	return reply(c, credentialsOut(cr))
}

// checkSyncTimeout bounds the check-syncs a rotation sends before answering.
const checkSyncTimeout = 3 * time.Second

func (s *server) rotateSIPCredentials(c *gin.Context) error {
	acct, id := c.Param("account"), c.Param("id")
	cr, err := s.db.RotateSIPCredentials(acct, id, actor(c))
	if err != nil {
		return err
	}
	s.checkSyncUser(c, acct, id)
	return reply(c, credentialsOut(cr))
}

// checkSyncUser asks every Yealink registered as the user to fetch its
// configuration again (best effort: a phone that misses it picks the change
// up at its next scheduled fetch).
func (s *server) checkSyncUser(c *gin.Context, acct, userID string) {
	if s.notifier == nil {
		return
	}
	bs, err := s.db.Bindings(acct, userID)
	if err != nil {
		s.log.WarnContext(c, "check-sync: list registrations", "user_id", userID, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), checkSyncTimeout)
	defer cancel()
	done := map[string]bool{}
	for _, b := range bs {
		if b.MAC == "" || done[b.MAC] {
			continue
		}
		done[b.MAC] = true
		if err := s.notifier.CheckSync(ctx, acct, b.MAC); err != nil {
			s.log.WarnContext(c, "check-sync failed", "account", acct, "mac", b.MAC, "err", err)
		}
	}
}

// deviceCredentialsJSON is a device's own provisioning credentials: what its
// <mac>.cfg carries and what its fetches authenticate with. Only ever the
// whole body of the provisioning-credentials routes, never part of a list.
// previous_password_expires_at is set while the previous password still
// works after a rotation.
type deviceCredentialsJSON struct {
	Username                  string  `json:"username"`
	Password                  string  `json:"password"`
	RotatedAt                 string  `json:"rotated_at" format:"date-time"`
	PreviousPasswordExpiresAt *string `json:"previous_password_expires_at,omitempty" format:"date-time"`
}

func deviceCredentialsOut(cr store.DeviceCredentials) deviceCredentialsJSON {
	out := deviceCredentialsJSON{Username: cr.Username, Password: cr.Password, RotatedAt: rfc3339(cr.RotatedAt)}
	if !cr.PreviousUntil.IsZero() {
		t := rfc3339(cr.PreviousUntil)
		out.PreviousPasswordExpiresAt = &t
	}
	return out
}

func (s *server) deviceProvisioningCredentials(c *gin.Context) error {
	cr, err := s.db.DeviceProvisioningCredentials(c.Param("account"), c.Param("mac"), actor(c))
	if err != nil {
		return err
	}
	c.Header("Cache-Control", "no-store")
	return reply(c, deviceCredentialsOut(cr))
}

// rotateDeviceProvisioningCredentials gives the device a new provisioning
// password (the previous one works for 24 h) and sends the phone a
// check-sync, so it fetches the file carrying the new one at once (best
// effort: otherwise at its next scheduled fetch).
func (s *server) rotateDeviceProvisioningCredentials(c *gin.Context) error {
	acct := c.Param("account")
	cr, err := s.db.RotateDeviceProvisioningCredentials(acct, c.Param("mac"), actor(c))
	if err != nil {
		return err
	}
	if s.notifier != nil {
		ctx, cancel := context.WithTimeout(c.Request.Context(), checkSyncTimeout)
		if err := s.notifier.CheckSync(ctx, acct, cr.MAC); err != nil {
			s.log.InfoContext(c, "check-sync after provisioning credential rotation", "account", acct, "mac", cr.MAC, "err", err)
		}
		cancel()
	}
	c.Header("Cache-Control", "no-store")
	return reply(c, deviceCredentialsOut(cr))
}

// reopenDeviceBootstrap lets the account's bootstrap credential open the
// device's file again until the phone next fetches with its own credentials
// (a factory-reset phone that knows only the DHCP/RPS settings).
func (s *server) reopenDeviceBootstrap(c *gin.Context) error {
	d, err := s.db.ReopenDeviceBootstrap(c.Param("account"), c.Param("mac"), actor(c))
	if err != nil {
		return err
	}
	return reply(c, deviceOut(d))
}
