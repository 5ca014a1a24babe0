package admin

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/internal/guard"
	"github.com/dialtone-voip/dialtone/store"
)

// BlockLister is the brute-force guard as the admin API sees it
// (*guard.Guard implements it).
type BlockLister interface {
	Blocks() []guard.Block
	Lift(ip string) bool
}

// blockJSON is one block in force: a whole source address, or (user set)
// one user from that source.
type blockJSON struct {
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
			out.Blocks = append(out.Blocks, blockJSON{Source: b.Source, User: b.User, Until: rfc3339(b.Until), Failures: b.Failures, Reason: b.Reason})
		}
	}
	return reply(c, out)
}

// liftBlock removes every block on the address (the source's own and its
// per-user ones) and records it in the provider audit log. An address with no
// block → 404.
func (s *server) liftBlock(c *gin.Context) error {
	ip := guard.IP(c.Param("ip"))
	if s.blocks == nil || !s.blocks.Lift(ip) {
		return &apiError{Status: http.StatusNotFound, Code: "not_found", Message: "no block on " + ip}
	}
	if err := s.db.RecordAudit(store.AuditEntry{AccountID: providerAudit, Actor: actor(c), Action: "security.block_lift",
		TargetKind: "source", TargetID: ip, TargetLabel: ip}); err != nil {
		s.log.ErrorContext(c, "record block lift in audit log", "source", ip, "err", err)
	}
	s.log.InfoContext(c, "block lifted", "source", ip)
	return reply(c, nil)
}
