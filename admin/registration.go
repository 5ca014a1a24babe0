package admin

import (
	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/store"
)

// registrationJSON is one live binding.
type registrationJSON struct {
	UserID       string `json:"user_id"`
	Contact      string `json:"contact"`
	Source       string `json:"source"`
	Transport    string `json:"transport"`
	UserAgent    string `json:"user_agent"`
	MAC          string `json:"mac,omitempty"`
	RegisteredAt string `json:"registered_at" format:"date-time"`
	// ExpiresAt: read through the node that holds the binding (Node), its
	// true expiry; through another node, an upper bound (docs/design.md,
	// "What another node shows").
	ExpiresAt string `json:"expires_at" format:"date-time"`
	// Node is the dialtone node that holds the phone's flow, with several
	// nodes on etcd; absent on one node.
	Node string `json:"node,omitempty"`
}

type registrationList struct {
	Registrations []registrationJSON `json:"registrations"`
}

// signOutJSON answers DELETE /users/{id}/registrations: how many live
// bindings were removed, and which.
type signOutJSON struct {
	Removed       int                `json:"removed"`
	Registrations []registrationJSON `json:"registrations"`
}

func registrationsOut(bs []store.Binding) []registrationJSON {
	out := make([]registrationJSON, 0, len(bs))
	for _, b := range bs {
		out = append(out, registrationJSON{UserID: b.UserID, Contact: b.Contact, Source: b.Source, Transport: b.Transport,
			UserAgent: b.UserAgent, MAC: b.MAC, RegisteredAt: rfc3339(b.RegisteredAt), ExpiresAt: rfc3339(b.ExpiresAt), Node: b.Node})
	}
	return out
}

func (s *server) userRegistrations(c *gin.Context) error {
	bs, err := s.db.Bindings(c.Param("account"), c.Param("id"))
	if err != nil {
		return err
	}
	return reply(c, registrationList{Registrations: registrationsOut(bs)})
}

func (s *server) accountRegistrations(c *gin.Context) error {
	bs, err := s.db.AccountBindings(c.Param("account"))
	if err != nil {
		return err
	}
	return reply(c, registrationList{Registrations: registrationsOut(bs)})
}

func (s *server) signOut(c *gin.Context) error {
	acct, id := c.Param("account"), c.Param("id")
	macs := s.macsOfUser(c, acct, id) // before the sign-out removes the registrations
	removed, err := s.db.SignOut(acct, id, actor(c))
	if err != nil {
		return err
	}
	// A signed-out Yealink fetches its config again (and re-registers if the
	// user is still enabled; a disabled user's slot comes back cleared).
	s.checkSyncMACs(c, acct, "signed out", macs)
	return reply(c, signOutJSON{Removed: len(removed), Registrations: registrationsOut(removed)})
}
