package admin

import (
	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/store"
)

// groupJSON is a paging or ring group.
type groupJSON struct {
	ID        string   `json:"id"`
	Kind      string   `json:"kind"`
	Name      string   `json:"name"`
	Extension string   `json:"extension"`
	Members   []string `json:"members"`
	Status    string   `json:"status"`
	CreatedAt string   `json:"created_at" format:"date-time"`
	UpdatedAt string   `json:"updated_at" format:"date-time"`
}

type groupList struct {
	Groups []groupJSON `json:"groups"`
}

type groupCreate struct {
	Kind      string   `json:"kind"`
	Name      string   `json:"name"`
	Extension string   `json:"extension"`
	Members   []string `json:"members,omitempty"`
}

// groupPatch: a field left out (or null) stays; the kind never changes;
// members replaces the list.
type groupPatch struct {
	Name      *string   `json:"name"`
	Extension *string   `json:"extension"`
	Members   *[]string `json:"members"`
}

func groupOut(g store.Group) groupJSON {
	return groupJSON{ID: g.ID, Kind: g.Kind, Name: g.Name, Extension: g.Extension, Members: members(g.Members), Status: g.Status,
		CreatedAt: rfc3339(g.CreatedAt), UpdatedAt: rfc3339(g.UpdatedAt)}
}

func (s *server) listGroups(c *gin.Context) error {
	gs, err := s.db.Groups(c.Param("account"))
	if err != nil {
		return err
	}
	out := groupList{Groups: make([]groupJSON, 0, len(gs))}
	for _, g := range gs {
		out.Groups = append(out.Groups, groupOut(g))
	}
	return reply(c, out)
}

func (s *server) createGroup(c *gin.Context) error {
	var in groupCreate
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	g, err := s.db.CreateGroup(c.Param("account"), store.NewGroup{Kind: in.Kind, Name: in.Name, Extension: in.Extension, Members: in.Members}, actor(c))
	if err != nil {
		return err
	}
	return reply(c, groupOut(g))
}

func (s *server) getGroup(c *gin.Context) error {
	g, err := s.db.Group(c.Param("account"), c.Param("id"))
	if err != nil {
		return err
	}
	return reply(c, groupOut(g))
}

func (s *server) updateGroup(c *gin.Context) error {
	var in groupPatch
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	var (
		g   store.Group
		err error
	)
	if in.Name == nil && in.Extension == nil && in.Members == nil {
		g, err = s.db.Group(c.Param("account"), c.Param("id"))
	} else {
		g, err = s.db.UpdateGroup(c.Param("account"), c.Param("id"), store.GroupPatch{Name: in.Name, Extension: in.Extension, Members: in.Members}, actor(c))
	}
	if err != nil {
		return err
	}
	return reply(c, groupOut(g))
}

func (s *server) deleteGroup(c *gin.Context) error {
	if err := s.db.DeleteGroup(c.Param("account"), c.Param("id"), actor(c)); err != nil {
		return err
	}
	return reply(c, nil)
}

func (s *server) disableGroup(c *gin.Context) error {
	g, err := s.db.DisableGroup(c.Param("account"), c.Param("id"), actor(c))
	if err != nil {
		return err
	}
	return reply(c, groupOut(g))
}

func (s *server) enableGroup(c *gin.Context) error {
	g, err := s.db.EnableGroup(c.Param("account"), c.Param("id"), actor(c))
	if err != nil {
		return err
	}
	return reply(c, groupOut(g))
}

func (s *server) addGroupMember(c *gin.Context) error {
	var in memberAdd
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	g, err := s.db.AddGroupMember(c.Param("account"), c.Param("id"), in.UserID, actor(c))
	if err != nil {
		return err
	}
	return reply(c, groupOut(g))
}

func (s *server) removeGroupMember(c *gin.Context) error {
	g, err := s.db.RemoveGroupMember(c.Param("account"), c.Param("id"), c.Param("user_id"), actor(c))
	if err != nil {
		return err
	}
	return reply(c, groupOut(g))
}
