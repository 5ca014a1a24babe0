package admin

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/store"
)

// backup streams a backup archive (store.WriteBackup: secret.key and a
// consistent snapshot of dialtone.db, as tar) while dialtone keeps serving.
// The archive holds the key that decrypts every SIP password, so the route is
// provider-only and each download is audited before a byte is sent; if the
// audit entry cannot be written, nothing is sent.
//
// A failure once streaming has begun cannot change the status: the
// connection is cut, so the client's archive is short and its tar reader
// reports it (`dialtone backup` checks the whole archive before keeping it).
func (s *server) backup(c *gin.Context) error {
	if err := s.db.RecordAudit(store.AuditEntry{AccountID: providerAudit, Actor: actor(c), Action: "backup.download",
		TargetKind: "backup", TargetID: "data", TargetLabel: "backup of the data directory"}); err != nil {
		return err
	}
	h := c.Writer.Header()
	h.Set("Content-Type", "application/x-tar")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="dialtone-backup-%s.tar"`, s.db.Now().UTC().Format("20060102T150405Z")))
	c.Status(http.StatusOK)
	info, err := s.db.WriteBackup(c.Writer)
	if err != nil {
		s.log.ErrorContext(c, "backup failed while streaming; cutting the connection", "err", err)
		panic(http.ErrAbortHandler)
	}
	s.log.InfoContext(c, "backup streamed", "db_bytes", info.DBBytes, "txid", strconv.Itoa(info.TxID))
	return nil
}
