package admin

import (
	"net/http"
	"net/netip"

	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/internal/guard"
	"github.com/dialtone-voip/dialtone/store"
)

// BlockLister is the brute-force guard as the admin API sees it
// (*guard.Guard implements it; one table serves SIP and provisioning).
type BlockLister interface {
	Blocks() []guard.Block
	Lift(addr netip.Addr) bool
}

// blockJSON is one block in force: a whole source address (an IPv6 source is
// its /64), or (user set) one user or credential from that source.
type blockJSON struct {
	Protocol string `json:"protocol"` // "sip" or "provisioning"
	Source   string `json:"source"`
	User     string `json:"user,omitempty"`
	Until    string `json:"until" format:"date-time"`
	Failures int    `json:"failures"`
	Reason   string `json:"reason"`
}

type blockList struct {
	Blocks []blockJSON `json:"blocks"`
}

func (s *server) listBlocks(c *gin.Context) error {
	out := blockList{Blocks: []blockJSON{}}
	if s.blocks != nil {
		for _, b := range s.blocks.Blocks() {
			out.Blocks = append(out.Blocks, blockJSON{Protocol: b.Protocol, Source: b.Source, User: b.User, Until: rfc3339(b.Until), Failures: b.Failures, Reason: b.Reason})
		}
	}
	return reply(c, out)
}

// liftBlock removes every block on the address, of every protocol (the
// source's own and its per-user ones; for IPv6, on the address's /64), and
// records it in the provider audit log. An address with no block → 404.
func (s *server) liftBlock(c *gin.Context) error {
	addr := guard.IP(c.Param("ip"))
	if !addr.IsValid() {
		return &apiError{Status: http.StatusNotFound, Code: "not_found", Message: "no block on that address"}
	}
	ip := addr.String()
	if s.blocks == nil || !s.blocks.Lift(addr) {
		return &apiError{Status: http.StatusNotFound, Code: "not_found", Message: "no block on " + ip}
	}
	if err := s.db.RecordAudit(store.AuditEntry{AccountID: providerAudit, Actor: actor(c), Action: "security.block_lift",
		TargetKind: "source", TargetID: ip, TargetLabel: ip}); err != nil {
		s.log.ErrorContext(c, "record block lift in audit log", "source", ip, "err", err)
	}
	s.log.InfoContext(c, "block lifted", "source", ip)
	return reply(c, nil)
}
