package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"time"
)

// Bindings are the one record the registrar writes on every REGISTER, so
// they have a binary encoding of their own instead of the version byte and
// JSON of every other record (encode, decode):
//
//	byte 0      encodingBindingV2
//	bytes 1–8   ExpiresAt, Unix nanoseconds, big-endian (read alone by scans)
//	uvarint     rev (see Binding.rev)
//	uvarint     CSeq
//	varint      RegisteredAt, UpdatedAt (Unix nanoseconds)
//	10 strings  AccountID, UserID, Contact, InstanceID, Q, Source, Transport,
//	            UserAgent, MAC, CallID, each a uvarint length and the bytes
//	1 string    Node, only when not empty (rows of a single node end above)
//
// Rows written by earlier releases (encodingV1, JSON) are still read, and
// rewritten in the binary form the next time a REGISTER writes them.
const encodingBindingV2 = 2

// bindingVersionOK reports whether v is a binding row this build can read
// (its first byte names a known encoding).
func bindingVersionOK(v []byte) bool {
	return len(v) >= 2 && (v[0] == encodingV1 || v[0] == encodingBindingV2)
}

// recordVersionOK is what a check of every record's version at Open must
// accept in bucket: the binding encodings in bindings, version 1 (JSON)
// elsewhere.
func recordVersionOK(bucket, v []byte) bool {
	if bytes.Equal(bucket, bBindings) {
		return bindingVersionOK(v)
	}
	return len(v) >= 2 && v[0] == encodingV1
}

var errBadBinding = errors.New("binding record is malformed")

func encodeBinding(b *Binding) []byte {
	strs := [...]string{b.AccountID, b.UserID, b.Contact, b.InstanceID, b.Q, b.Source, b.Transport, b.UserAgent, b.MAC, b.CallID}
	n := 1 + 8 + 3*binary.MaxVarintLen64 + binary.MaxVarintLen32
	for _, s := range strs {
		n += binary.MaxVarintLen32 + len(s)
	}
	n += binary.MaxVarintLen32 + len(b.Node)
	out := make([]byte, 9, n)
	out[0] = encodingBindingV2
	binary.BigEndian.PutUint64(out[1:9], uint64(b.ExpiresAt.UnixNano()))
	out = binary.AppendUvarint(out, b.rev)
	out = binary.AppendUvarint(out, uint64(b.CSeq))
	out = binary.AppendVarint(out, b.RegisteredAt.UnixNano())
	out = binary.AppendVarint(out, b.UpdatedAt.UnixNano())
	for _, s := range strs {
		out = binary.AppendUvarint(out, uint64(len(s)))
		out = append(out, s...)
	}
	if b.Node != "" {
		out = binary.AppendUvarint(out, uint64(len(b.Node)))
		out = append(out, b.Node...)
	}
	return out
}

// decodeBinding reads a binding row in either encoding.
func decodeBinding(v []byte, b *Binding) error {
	if len(v) > 0 && v[0] == encodingV1 {
		*b = Binding{}
		return decode(v, b)
	}
	if len(v) < 9 || v[0] != encodingBindingV2 {
		return errBadBinding
	}
	d := bindingReader{buf: v[9:]}
	nb := Binding{ExpiresAt: time.Unix(0, int64(binary.BigEndian.Uint64(v[1:9]))).UTC()}
	nb.rev = d.uvarint()
	cseq := d.uvarint()
	nb.RegisteredAt = time.Unix(0, d.varint()).UTC()
	nb.UpdatedAt = time.Unix(0, d.varint()).UTC()
	for _, p := range [...]*string{&nb.AccountID, &nb.UserID, &nb.Contact, &nb.InstanceID, &nb.Q, &nb.Source, &nb.Transport, &nb.UserAgent, &nb.MAC, &nb.CallID} {
		*p = d.str()
	}
	if len(d.buf) > 0 {
		if nb.Node = d.str(); nb.Node == "" {
			d.bad = true // an empty Node is never written
		}
	}
	if d.bad || len(d.buf) != 0 || cseq > 1<<32-1 {
		return errBadBinding
	}
	nb.CSeq = uint32(cseq)
	*b = nb
	return nil
}

// bindingExpiry reads only a row's expiry (Unix nanoseconds), cheaply for
// the binary encoding.
func bindingExpiry(v []byte) (int64, error) {
	if len(v) >= 9 && v[0] == encodingBindingV2 {
		return int64(binary.BigEndian.Uint64(v[1:9])), nil
	}
	var b struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := decode(v, &b); err != nil {
		return 0, err
	}
	return b.ExpiresAt.UnixNano(), nil
}

type bindingReader struct {
	buf []byte
	bad bool
}

func (r *bindingReader) uvarint() uint64 {
	x, n := binary.Uvarint(r.buf)
	if n <= 0 {
		r.bad, r.buf = true, nil
		return 0
	}
	r.buf = r.buf[n:]
	return x
}

func (r *bindingReader) varint() int64 {
	x, n := binary.Varint(r.buf)
	if n <= 0 {
		r.bad, r.buf = true, nil
		return 0
	}
	r.buf = r.buf[n:]
	return x
}

func (r *bindingReader) str() string {
	n := r.uvarint()
	if r.bad || n > uint64(len(r.buf)) {
		r.bad, r.buf = true, nil
		return ""
	}
	s := string(r.buf[:n])
	r.buf = r.buf[n:]
	return s
}
