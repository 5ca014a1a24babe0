package admin

import (
	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/store"
)

// userJSON is a phone user as the API shows it.
type userJSON struct {
	ID        string `json:"id"`
	Extension string `json:"extension"`
	Name      string `json:"name"`
	Email     string `json:"email"`
	Status    string `json:"status"`
	CreatedAt string `json:"created_at" format:"date-time"`
	UpdatedAt string `json:"updated_at" format:"date-time"`
}

type userList struct {
	Users []userJSON `json:"users"`
}

type userCreate struct {
	Extension string `json:"extension"`
	Name      string `json:"name"`
	Email     string `json:"email,omitempty"`
}

// userPatch: a field left out (or null) stays as it is.
type userPatch struct {
	Extension *string `json:"extension"`
	Name      *string `json:"name"`
	Email     *string `json:"email"`
}

type deletionCheckJSON struct {
	Deletable bool          `json:"deletable"`
	Blockers  []blockerJSON `json:"blockers"`
}

func userOut(u store.User) userJSON {
	return userJSON{ID: u.ID, Extension: u.Extension, Name: u.Name, Email: u.Email, Status: u.Status,
		CreatedAt: rfc3339(u.CreatedAt), UpdatedAt: rfc3339(u.UpdatedAt)}
}

func (s *server) listUsers(c *gin.Context) error {
	users, err := s.db.Users(c.Param("account"))
	if err != nil {
		return err
	}
	out := userList{Users: make([]userJSON, 0, len(users))}
	for _, u := range users {
		out.Users = append(out.Users, userOut(u))
	}
	return reply(c, out)
}

func (s *server) createUser(c *gin.Context) error {
	var in userCreate
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	u, err := s.db.CreateUser(c.Param("account"), store.NewUser{Extension: in.Extension, Name: in.Name, Email: in.Email}, actor(c))
	if err != nil {
		return err
	}
	return reply(c, userOut(u))
}

func (s *server) getUser(c *gin.Context) error {
	u, err := s.db.User(c.Param("account"), c.Param("id"))
	if err != nil {
		return err
	}
	return reply(c, userOut(u))
}

func (s *server) updateUser(c *gin.Context) error {
	var in userPatch
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	var (
		u   store.User
		err error
	)
	if in.Extension == nil && in.Name == nil && in.Email == nil {
		u, err = s.db.User(c.Param("account"), c.Param("id"))
	} else {
		u, err = s.db.UpdateUser(c.Param("account"), c.Param("id"), store.UserPatch{Extension: in.Extension, Name: in.Name, Email: in.Email}, actor(c))
	}
	if err != nil {
		return err
	}
	return reply(c, userOut(u))
}

// Disabling, enabling and deleting a user change what their phones are
// served (docs/account-model.md rules 7 and 12): each sends a check-sync to
// those phones.

func (s *server) disableUser(c *gin.Context) error {
	acct, id := c.Param("account"), c.Param("id")
	u, err := s.db.DisableUser(acct, id, actor(c))
	if err != nil {
		return err
	}
	s.checkSyncMACs(c, acct, "user disabled", s.macsOfUser(c, acct, id))
	return reply(c, userOut(u))
}

func (s *server) enableUser(c *gin.Context) error {
	acct, id := c.Param("account"), c.Param("id")
	u, err := s.db.EnableUser(acct, id, actor(c))
	if err != nil {
		return err
	}
	s.checkSyncMACs(c, acct, "user enabled", s.macsOfUser(c, acct, id))
	return reply(c, userOut(u))
}

func (s *server) deleteUser(c *gin.Context) error {
	acct, id := c.Param("account"), c.Param("id")
	macs := s.macsOfUser(c, acct, id) // before the delete takes the lines away
	if err := s.db.DeleteUser(acct, id, actor(c)); err != nil {
		return err
	}
	s.checkSyncMACs(c, acct, "user deleted", macs)
	return reply(c, nil)
}

func (s *server) deletionCheck(c *gin.Context) error {
	bs, err := s.db.DeletionCheck(c.Param("account"), c.Param("id"))
	if err != nil {
		return err
	}
	return reply(c, deletionCheckJSON{Deletable: len(bs) == 0, Blockers: renderBlockers(bs)})
}
