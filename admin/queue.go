package admin

import (
	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/store"
)

// queueJSON is a call queue; members are user ids in the order they were added.
type queueJSON struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	Extension string   `json:"extension"`
	Members   []string `json:"members"`
	CreatedAt string   `json:"created_at" format:"date-time"`
	UpdatedAt string   `json:"updated_at" format:"date-time"`
}

type queueList struct {
	Queues []queueJSON `json:"queues"`
}

type queueCreate struct {
	Name      string   `json:"name"`
	Extension string   `json:"extension"`
	Members   []string `json:"members,omitempty"`
}

// queuePatch: a field left out (or null) stays; members replaces the list.
type queuePatch struct {
	Name      *string   `json:"name"`
	Extension *string   `json:"extension"`
	Members   *[]string `json:"members"`
}

// memberAdd is the body of POST /queues/{id}/members and /groups/{id}/members.
type memberAdd struct {
	UserID string `json:"user_id"`
}

func members(ids []string) []string {
	if ids == nil {
		return []string{}
	}
	return ids
}

func queueOut(q store.Queue) queueJSON {
	return queueJSON{ID: q.ID, Name: q.Name, Extension: q.Extension, Members: members(q.Members),
		CreatedAt: rfc3339(q.CreatedAt), UpdatedAt: rfc3339(q.UpdatedAt)}
}

func (s *server) listQueues(c *gin.Context) error {
	qs, err := s.db.Queues(c.Param("account"))
	if err != nil {
		return err
	}
	out := queueList{Queues: make([]queueJSON, 0, len(qs))}
	for _, q := range qs {
		out.Queues = append(out.Queues, queueOut(q))
	}
	return reply(c, out)
}

func (s *server) createQueue(c *gin.Context) error {
	var in queueCreate
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	q, err := s.db.CreateQueue(c.Param("account"), store.NewQueue{Name: in.Name, Extension: in.Extension, Members: in.Members}, actor(c))
	if err != nil {
		return err
	}
	return reply(c, queueOut(q))
}

func (s *server) getQueue(c *gin.Context) error {
	q, err := s.db.Queue(c.Param("account"), c.Param("id"))
	if err != nil {
		return err
	}
	return reply(c, queueOut(q))
}

func (s *server) updateQueue(c *gin.Context) error {
	var in queuePatch
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	var (
		q   store.Queue
		err error
	)
	if in.Name == nil && in.Extension == nil && in.Members == nil {
		q, err = s.db.Queue(c.Param("account"), c.Param("id"))
	} else {
		q, err = s.db.UpdateQueue(c.Param("account"), c.Param("id"), store.QueuePatch{Name: in.Name, Extension: in.Extension, Members: in.Members}, actor(c))
	}
	if err != nil {
		return err
	}
	return reply(c, queueOut(q))
}

func (s *server) deleteQueue(c *gin.Context) error {
	if err := s.db.DeleteQueue(c.Param("account"), c.Param("id"), actor(c)); err != nil {
		return err
	}
	return reply(c, nil)
}

func (s *server) addQueueMember(c *gin.Context) error {
	var in memberAdd
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	q, err := s.db.AddQueueMember(c.Param("account"), c.Param("id"), in.UserID, actor(c))
	if err != nil {
		return err
	}
	return reply(c, queueOut(q))
}

func (s *server) removeQueueMember(c *gin.Context) error {
	q, err := s.db.RemoveQueueMember(c.Param("account"), c.Param("id"), c.Param("user_id"), actor(c))
	if err != nil {
		return err
	}
	return reply(c, queueOut(q))
}
