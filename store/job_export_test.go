package store

// NoSyncForTest turns off fsync on db's bbolt file. Only for tests that check
// rules on many generated records and never reopen the store: durability is
// not what they test, and fsync on a busy machine dominates their run time.
func NoSyncForTest(db *DB) {
	if db.bolt != nil {
		db.bolt.NoSync = true
	}
}
