package store

// PutLegacyBindingForTest writes b as a release before the binary encoding
// did (version byte 1 and JSON), with the live count told as Register would.
func PutLegacyBindingForTest(db *DB, b Binding) error {
	return db.update(func(t *tx) error {
		t.bindingAdded(b.ExpiresAt)
		return put(t.Bucket(bBindings), k(b.AccountID, b.UserID, b.key()), b)
	})
}

// BindingEncodingsForTest returns the first byte (the encoding) of every
// binding row of the user, as stored on disk.
func BindingEncodingsForTest(db *DB, acct, userID string) ([]byte, error) {
	var out []byte
	err := db.view(func(t *tx) error {
		return each(t.Bucket(bBindings), k(acct, userID), func(_, v []byte) error {
			out = append(out, v[0])
			return nil
		})
	})
	return out, err
}
