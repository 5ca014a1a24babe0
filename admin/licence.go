package admin

import (
	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/store"
)

// licenceJSON is one paid seat; user_id is null while it is free.
type licenceJSON struct {
	ID         string  `json:"id"`
	Type       string  `json:"type"`
	UserID     *string `json:"user_id"`
	CreatedAt  string  `json:"created_at" format:"date-time"`
	AssignedAt *string `json:"assigned_at" format:"date-time"`
}

type licenceList struct {
	Licences []licenceJSON `json:"licences"`
}

// licenceCreate: type defaults to "cloud-phone"; the body may be empty.
type licenceCreate struct {
	Type string `json:"type,omitempty"`
}

type licenceAssign struct {
	UserID string `json:"user_id"`
}

func licenceOut(l store.Licence) licenceJSON {
	out := licenceJSON{ID: l.ID, Type: l.Type, CreatedAt: rfc3339(l.CreatedAt)}
	if l.UserID != "" {
		uid, at := l.UserID, rfc3339(l.AssignedAt)
		out.UserID, out.AssignedAt = &uid, &at
	}
	return out
}

func (s *server) listLicences(c *gin.Context) error {
	ls, err := s.db.Licences(c.Param("account"))
	if err != nil {
		return err
	}
	out := licenceList{Licences: make([]licenceJSON, 0, len(ls))}
	for _, l := range ls {
		out.Licences = append(out.Licences, licenceOut(l))
	}
	return reply(c, out)
}

func (s *server) createLicence(c *gin.Context) error {
	var in licenceCreate
	if err := decodeOptionalBody(c, &in); err != nil {
		return err
	}
	l, err := s.db.CreateLicence(c.Param("account"), in.Type, actor(c))
	if err != nil {
		return err
	}
	return reply(c, licenceOut(l))
}

func (s *server) getLicence(c *gin.Context) error {
	l, err := s.db.Licence(c.Param("account"), c.Param("id"))
	if err != nil {
		return err
	}
	return reply(c, licenceOut(l))
}

func (s *server) assignLicence(c *gin.Context) error {
	var in licenceAssign
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	l, err := s.db.AssignLicence(c.Param("account"), c.Param("id"), in.UserID, actor(c))
	if err != nil {
		return err
	}
	return reply(c, licenceOut(l))
}

func (s *server) releaseLicence(c *gin.Context) error {
	l, err := s.db.ReleaseLicence(c.Param("account"), c.Param("id"), actor(c))
	if err != nil {
		return err
	}
	return reply(c, licenceOut(l))
}

func (s *server) deleteLicence(c *gin.Context) error {
	if err := s.db.DeleteLicence(c.Param("account"), c.Param("id"), actor(c)); err != nil {
		return err
	}
	return reply(c, nil)
}
