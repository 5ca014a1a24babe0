package store

import (
	"reflect"
	"testing"
	"time"
)

func sampleBinding() Binding {
	at := time.Date(2026, 11, 23, 9, 0, 0, 123, time.UTC)
	return Binding{AccountID: "default", UserID: "usr-abc", Contact: "sip:1002@192.0.2.7:5062;transport=tcp", InstanceID: "urn:uuid:1",
		Q: "0.5", Source: "192.0.2.7:5062", Transport: "tcp", UserAgent: "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc", MAC: "001565aabbcc",
		CallID: "abc@host", CSeq: 4294967295, RegisteredAt: at, UpdatedAt: at.Add(time.Minute), ExpiresAt: at.Add(time.Hour), rev: 77}
}

func TestBindingCodecRoundTrip(t *testing.T) {
	withNode := sampleBinding()
	withNode.Node = "node-b"
	for _, b := range []Binding{sampleBinding(), withNode, {}} {
		var got Binding
		if err := decodeBinding(encodeBinding(&b), &got); err != nil {
			t.Fatal(err)
		}
		if b.ExpiresAt.IsZero() { // the zero time has no Unix nanoseconds; never stored
			continue
		}
		if !reflect.DeepEqual(got, b) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, b)
		}
		e, err := bindingExpiry(encodeBinding(&b))
		if err != nil || e != b.ExpiresAt.UnixNano() {
			t.Fatalf("bindingExpiry = %d, %v", e, err)
		}
	}
}

// A row written by an earlier release (version byte 1 and JSON) still reads.
func TestBindingCodecReadsJSON(t *testing.T) {
	b := sampleBinding()
	b.rev = 0 // JSON never had it
	v, err := encode(b)
	if err != nil {
		t.Fatal(err)
	}
	var got Binding
	if err := decodeBinding(v, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, b) {
		t.Fatalf("JSON row:\n got %+v\nwant %+v", got, b)
	}
	if e, err := bindingExpiry(v); err != nil || e != b.ExpiresAt.UnixNano() {
		t.Fatalf("bindingExpiry(JSON) = %d, %v", e, err)
	}
	if !bindingVersionOK(v) || !bindingVersionOK(encodeBinding(&b)) || bindingVersionOK([]byte{3, 0}) {
		t.Fatal("bindingVersionOK")
	}
	if !recordVersionOK(bBindings, encodeBinding(&b)) || !recordVersionOK(bBindings, v) ||
		recordVersionOK(bUsers, encodeBinding(&b)) || !recordVersionOK(bUsers, v) {
		t.Fatal("recordVersionOK")
	}
}

// FuzzDecodeBinding: no input makes the decoder panic, and whatever it
// accepts encodes back to the same bytes.
func FuzzDecodeBinding(f *testing.F) {
	b := sampleBinding()
	f.Add(encodeBinding(&b))
	f.Add([]byte{encodingBindingV2, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{encodingBindingV2, 1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte(`{"contact":"x"}`))
	f.Add(append([]byte{encodingV1}, `{"contact":"x","expires_at":"2026-01-01T00:00:00Z"}`...))
	f.Fuzz(func(t *testing.T, data []byte) {
		var got Binding
		if err := decodeBinding(data, &got); err != nil || data[0] != encodingBindingV2 {
			_, _ = bindingExpiry(data)
			return
		}
		var again Binding
		if err := decodeBinding(encodeBinding(&got), &again); err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("re-encoded %+v reads back as %+v, %v", got, again, err)
		}
	})
}
