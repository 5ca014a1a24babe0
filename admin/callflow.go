package admin

import (
	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/store"
)

// stepJSON is one stage of a callflow: "ring" (user_ids, all at once),
// "queue" (queue_id) or "group" (group_id); timeout_s 0 means the SIP side's
// default.
type stepJSON struct {
	Type     string   `json:"type"`
	UserIDs  []string `json:"user_ids,omitempty"`
	QueueID  string   `json:"queue_id,omitempty"`
	GroupID  string   `json:"group_id,omitempty"`
	TimeoutS int      `json:"timeout_s,omitempty"`
}

// callflowJSON is one version of a callflow. Every version has its own id;
// lineage (the id of version 1) links the versions. status is ACTIVE when
// numbers route to it, else AVAILABLE.
type callflowJSON struct {
	ID        string     `json:"id"`
	Lineage   string     `json:"lineage"`
	Name      string     `json:"name"`
	Version   int        `json:"version"`
	Status    string     `json:"status"`
	Steps     []stepJSON `json:"steps"`
	Numbers   []string   `json:"numbers"`
	CreatedAt string     `json:"created_at" format:"date-time"`
}

type callflowList struct {
	Callflows []callflowJSON `json:"callflows"`
}

// callflowSpec is the body of POST /callflows and PUT /callflows/{id}.
type callflowSpec struct {
	Name  string     `json:"name"`
	Steps []stepJSON `json:"steps"`
}

type callflowReassign struct {
	To string `json:"to"`
}

// callflowReassigned answers a reassign: the callflow (now AVAILABLE) and,
// under reassigned_to, the callflow that took its numbers.
type callflowReassigned struct {
	callflowJSON
	ReassignedTo callflowJSON `json:"reassigned_to"`
}

func callflowOut(cf store.Callflow) callflowJSON {
	out := callflowJSON{ID: cf.ID, Lineage: cf.Lineage, Name: cf.Name, Version: cf.Version, Status: cf.Status,
		Steps: make([]stepJSON, 0, len(cf.Steps)), Numbers: members(cf.Numbers), CreatedAt: rfc3339(cf.CreatedAt)}
	for _, st := range cf.Steps {
		out.Steps = append(out.Steps, stepJSON{Type: st.Type, UserIDs: st.UserIDs, QueueID: st.QueueID, GroupID: st.GroupID, TimeoutS: st.TimeoutS})
	}
	return out
}

func (in callflowSpec) store() store.CallflowSpec {
	spec := store.CallflowSpec{Name: in.Name, Steps: make([]store.Step, 0, len(in.Steps))}
	for _, st := range in.Steps {
		spec.Steps = append(spec.Steps, store.Step{Type: st.Type, UserIDs: st.UserIDs, QueueID: st.QueueID, GroupID: st.GroupID, TimeoutS: st.TimeoutS})
	}
	return spec
}

func (s *server) listCallflows(c *gin.Context) error {
	cfs, err := s.db.Callflows(c.Param("account"))
	if err != nil {
		return err
	}
	out := callflowList{Callflows: make([]callflowJSON, 0, len(cfs))}
	for _, cf := range cfs {
		out.Callflows = append(out.Callflows, callflowOut(cf))
	}
	return reply(c, out)
}

func (s *server) createCallflow(c *gin.Context) error {
	var in callflowSpec
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	cf, err := s.db.CreateCallflow(c.Param("account"), in.store(), actor(c))
	if err != nil {
		return err
	}
	return reply(c, callflowOut(cf))
}

func (s *server) getCallflow(c *gin.Context) error {
	cf, err := s.db.Callflow(c.Param("account"), c.Param("id"))
	if err != nil {
		return err
	}
	return reply(c, callflowOut(cf))
}

// editCallflow is PUT: a new version that takes over the numbers; the old
// one stays, AVAILABLE.
func (s *server) editCallflow(c *gin.Context) error {
	var in callflowSpec
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	cf, err := s.db.NewCallflowVersion(c.Param("account"), c.Param("id"), in.store(), actor(c))
	if err != nil {
		return err
	}
	c.Header("Location", c.Request.URL.Path[:len(c.Request.URL.Path)-len(c.Param("id"))]+cf.ID)
	return reply(c, callflowOut(cf))
}

func (s *server) reassignCallflow(c *gin.Context) error {
	var in callflowReassign
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	from, to, err := s.db.ReassignCallflow(c.Param("account"), c.Param("id"), in.To, actor(c))
	if err != nil {
		return err
	}
	return reply(c, callflowReassigned{callflowJSON: callflowOut(from), ReassignedTo: callflowOut(to)})
}

func (s *server) deleteCallflow(c *gin.Context) error {
	if err := s.db.DeleteCallflow(c.Param("account"), c.Param("id"), actor(c)); err != nil {
		return err
	}
	return reply(c, nil)
}
