package admin

import (
	"fmt"

	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/store"
)

// numberJSON is a phone number (DID): active (routed to callflow_id) or
// available (callflow_id null). history lists each callflow it was routed
// to, oldest first; the last period's "to" is null while it is current.
type numberJSON struct {
	E164       string             `json:"e164"`
	Status     string             `json:"status"`
	CallflowID *string            `json:"callflow_id"`
	History    []numberPeriodJSON `json:"history"`
	CreatedAt  string             `json:"created_at" format:"date-time"`
	UpdatedAt  string             `json:"updated_at" format:"date-time"`
}

type numberPeriodJSON struct {
	CallflowID      string  `json:"callflow_id"`
	CallflowName    string  `json:"callflow_name"`
	CallflowVersion int     `json:"callflow_version"`
	From            string  `json:"from" format:"date-time"`
	To              *string `json:"to" format:"date-time"`
	Actor           string  `json:"actor"`
}

type numberList struct {
	Numbers []numberJSON `json:"numbers"`
}

type numberCreate struct {
	E164 string `json:"e164"`
}

type numberActivate struct {
	CallflowID string `json:"callflow_id"`
}

func numberOut(n store.Number) numberJSON {
	out := numberJSON{E164: n.E164, Status: n.Status, CallflowID: optString(n.CallflowID),
		History: make([]numberPeriodJSON, 0, len(n.History)), CreatedAt: rfc3339(n.CreatedAt), UpdatedAt: rfc3339(n.UpdatedAt)}
	for _, p := range n.History {
		pj := numberPeriodJSON{CallflowID: p.CallflowID, CallflowName: p.CallflowName, CallflowVersion: p.CallflowVersion,
			From: rfc3339(p.From), Actor: p.Actor}
		if p.To != nil {
			t := rfc3339(*p.To)
			pj.To = &t
		}
		out.History = append(out.History, pj)
	}
	return out
}

// numberParam is the path's {e164}, "+" optional. A path that is not a
// number names no number: 404, like any other unknown id.
func numberParam(c *gin.Context) (string, error) {
	e, ok := store.NormalizeE164(c.Param("e164"))
	if !ok {
		return "", errNotFound(fmt.Sprintf("number %s: not found", c.Param("e164")))
	}
	return e, nil
}

func (s *server) listNumbers(c *gin.Context) error {
	ns, err := s.db.Numbers(c.Param("account"), c.Query("status"))
	if err != nil {
		return err
	}
	out := numberList{Numbers: make([]numberJSON, 0, len(ns))}
	for _, n := range ns {
		out.Numbers = append(out.Numbers, numberOut(n))
	}
	return reply(c, out)
}

func (s *server) addNumber(c *gin.Context) error {
	var in numberCreate
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	n, err := s.db.AddNumber(c.Param("account"), in.E164, actor(c))
	if err != nil {
		return err
	}
	return reply(c, numberOut(n))
}

func (s *server) getNumber(c *gin.Context) error {
	e, err := numberParam(c)
	if err != nil {
		return err
	}
	n, err := s.db.Number(c.Param("account"), e)
	if err != nil {
		return err
	}
	return reply(c, numberOut(n))
}

func (s *server) activateNumber(c *gin.Context) error {
	e, err := numberParam(c)
	if err != nil {
		return err
	}
	var in numberActivate
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	n, err := s.db.ActivateNumber(c.Param("account"), e, in.CallflowID, actor(c))
	if err != nil {
		return err
	}
	return reply(c, numberOut(n))
}

func (s *server) deactivateNumber(c *gin.Context) error {
	e, err := numberParam(c)
	if err != nil {
		return err
	}
	n, err := s.db.DeactivateNumber(c.Param("account"), e, actor(c))
	if err != nil {
		return err
	}
	return reply(c, numberOut(n))
}

func (s *server) removeNumber(c *gin.Context) error {
	e, err := numberParam(c)
	if err != nil {
		return err
	}
	if err := s.db.RemoveNumber(c.Param("account"), e, actor(c)); err != nil {
		return err
	}
	return reply(c, nil)
}
