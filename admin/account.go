package admin

import (
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/store"
)

// accountJSON is an account as the API shows it.
type accountJSON struct {
	ID        string `json:"id"`
	SIPDomain string `json:"sip_domain"`
	// OperatorExtension is "" while none is set.
	OperatorExtension string    `json:"operator_extension"`
	Seats             seatsJSON `json:"seats"`
	CreatedAt         string    `json:"created_at" format:"date-time"`
}

// seatsJSON counts the account's licences.
type seatsJSON struct {
	Total    int `json:"total"`
	Assigned int `json:"assigned"`
	Free     int `json:"free"`
}

type accountList struct {
	Accounts []accountJSON `json:"accounts"`
}

type accountCreate struct {
	ID        string `json:"id"`
	SIPDomain string `json:"sip_domain"`
}

// accountPatch: a field left out (or null) stays as it is; operator_extension
// "" clears it.
type accountPatch struct {
	SIPDomain         *string `json:"sip_domain"`
	OperatorExtension *string `json:"operator_extension"`
}

func (s *server) accountOut(a store.Account) (accountJSON, error) {
	seats, err := s.db.Seats(a.ID)
	if err != nil {
		return accountJSON{}, err
	}
	return accountJSON{ID: a.ID, SIPDomain: a.SIPDomain, OperatorExtension: a.OperatorExtension,
		Seats:     seatsJSON{Total: seats.Total, Assigned: seats.Assigned, Free: seats.Free},
		CreatedAt: rfc3339(a.CreatedAt)}, nil
}

func (s *server) listAccounts(c *gin.Context) error {
	var accounts []store.Account
	if isProvider(c) {
		var err error
		if accounts, err = s.db.Accounts(); err != nil {
			return err
		}
	} else {
		tok, _ := tokenOf(c)
		a, err := s.db.Account(tok.AccountID)
		if err != nil {
			return err
		}
		accounts = []store.Account{a}
	}
	out := accountList{Accounts: []accountJSON{}}
	for _, a := range accounts {
		aj, err := s.accountOut(a)
		if err != nil {
			return err
		}
		out.Accounts = append(out.Accounts, aj)
	}
	return reply(c, out)
}

func (s *server) createAccount(c *gin.Context) error {
	var in accountCreate
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	// "_provider" names the provider's audit log; no account may share it.
	if strings.HasPrefix(in.ID, "_") {
		return errInvalid("id", "account ids starting with '_' are reserved")
	}
	a, err := s.db.CreateAccount(in.ID, in.SIPDomain, actor(c))
	if err != nil {
		return err
	}
	out, err := s.accountOut(a)
	if err != nil {
		return err
	}
	return reply(c, out)
}

func (s *server) getAccount(c *gin.Context) error {
	a, err := s.db.Account(c.Param("account"))
	if err != nil {
		return err
	}
	out, err := s.accountOut(a)
	if err != nil {
		return err
	}
	return reply(c, out)
}

func (s *server) updateAccount(c *gin.Context) error {
	var in accountPatch
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	if in.SIPDomain != nil && !isProvider(c) {
		return &apiError{Status: 403, Code: "forbidden", Field: "sip_domain", Message: "only a provider token may change sip_domain"}
	}
	id := c.Param("account")
	var (
		a   store.Account
		err error
	)
	if in.SIPDomain == nil && in.OperatorExtension == nil {
		a, err = s.db.Account(id)
	} else {
		a, err = s.db.UpdateAccount(id, store.AccountPatch{SIPDomain: in.SIPDomain, OperatorExtension: in.OperatorExtension}, actor(c))
	}
	if err != nil {
		return err
	}
	out, err := s.accountOut(a)
	if err != nil {
		return err
	}
	return reply(c, out)
}
