package store

import (
	"errors"
)

// The announcement an operator uploaded at run time (PUT /api/v1/announcement)
// is kept in the store, so it survives a restart and is in every backup.

var bSettings = []byte("settings") // name → setting

const keyAnnouncement = "announcement"

// maxAnnouncement bounds the stored WAV (the admin API accepts 16 MiB).
const maxAnnouncement = 16 << 20

// SetAnnouncement stores wav as the announcement to play and appends e to
// the audit log, in one transaction: both or neither.
func (db *DB) SetAnnouncement(wav []byte, e AuditEntry) error {
	if len(wav) == 0 || len(wav) > maxAnnouncement {
		return invalid("announcement", "must be 1 byte to 16 MiB")
	}
	return db.update(func(t *tx) error {
		b := t.Bucket(bSettings)
		// One version byte, then the WAV file as uploaded (not JSON: it is
		// bytes, and up to 16 MiB).
		if err := b.Put([]byte(keyAnnouncement), append([]byte{encodingV1}, wav...)); err != nil {
			return err
		}
		return t.audit(e)
	})
}

// Announcement returns the stored announcement WAV, or nil if none was set.
func (db *DB) Announcement() ([]byte, error) {
	var out []byte
	err := db.view(func(t *tx) error {
		v := t.Bucket(bSettings).Get([]byte(keyAnnouncement))
		if v == nil {
			return nil
		}
		if v[0] != encodingV1 {
			return errors.New("stored announcement has an unknown encoding")
		}
		out = append([]byte(nil), v[1:]...)
		return nil
	})
	return out, err
}
