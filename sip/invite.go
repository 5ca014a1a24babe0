package sip

import (
	"github.com/emiago/sipgo/sip"
)

type calls struct{ m *callMetrics }

var inDialogMethods = []sip.RequestMethod{}

func (c *Config) checkCallConfig() error { return nil }

func (s *Server) initCalls() {
	m, _ := newCallMetrics(nil)
	s.calls = &calls{m: m}
}

func (s *Server) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	s.reply(req, tx, 501, "Not Implemented")
}

func (s *Server) onAck(*sip.Request, sip.ServerTransaction) {}

func (s *Server) onCancel(req *sip.Request, tx sip.ServerTransaction) {
	s.reply(req, tx, 481, "Call/Transaction Does Not Exist")
}

func (s *Server) onInDialog(req *sip.Request, tx sip.ServerTransaction) {
	s.reply(req, tx, 481, "Call/Transaction Does Not Exist")
}
