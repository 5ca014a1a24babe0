package sip

import (
	"math"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/google/go-cmp/cmp"
)

func TestParseExpires(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint32
		ok   bool
	}{
		{"3600", 3600, true}, {" 60\t", 60, true}, {"0", 0, true}, {"007", 7, true},
		{"4294967295", math.MaxUint32, true}, {"4294967296", math.MaxUint32, true},
		{"99999999999999999999999999", math.MaxUint32, true},
		{"", 0, false}, {" ", 0, false}, {"-1", 0, false}, {"+1", 0, false}, {"1e3", 0, false}, {"6 0", 0, false}, {"60s", 0, false},
	} {
		got, err := parseExpires(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseExpires(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func parseRegister(t *testing.T, headers string) *sip.Request {
	t.Helper()
	m, err := sip.ParseMessage([]byte(registerWith(headers)))
	if err != nil {
		t.Fatalf("ParseMessage: %v", err)
	}
	return m.(*sip.Request)
}

func TestParseContacts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers string
		want    contactSet
		wantErr string
	}{
		{"none", "", contactSet{}, ""},
		{"one", "Contact: <sip:1001@192.0.2.7:5062;transport=tcp>\r\n",
			contactSet{Contacts: []contact{{URI: "sip:1001@192.0.2.7:5062;transport=tcp", Expires: -1}}}, ""},
		{"params", "Contact: \"Ada\" <sip:1001@192.0.2.7>;expires=120;q=0.5;+sip.instance=\"<urn:uuid:abc>\";reg-id=1\r\n",
			contactSet{Contacts: []contact{{URI: "sip:1001@192.0.2.7", Expires: 120, Q: "0.5", InstanceID: "<urn:uuid:abc>"}}}, ""},
		{"spaced and upper-case param", "Contact: <sip:1001@192.0.2.7>;EXPIRES=30\r\n",
			contactSet{Contacts: []contact{{URI: "sip:1001@192.0.2.7", Expires: 30}}}, ""},
		{"comma list and compact form", "m: <sip:a@192.0.2.1>, <sip:b@192.0.2.2>;expires=0\r\n",
			contactSet{Contacts: []contact{{URI: "sip:a@192.0.2.1", Expires: -1}, {URI: "sip:b@192.0.2.2", Expires: 0}}}, ""},
		{"wildcard", "Contact: *\r\n", contactSet{Wildcard: true}, ""},
		{"wildcard mixed", "Contact: *\r\nContact: <sip:a@b>\r\n", contactSet{}, "Wildcard Contact Not Alone"},
		{"bad expires", "Contact: <sip:a@b>;expires=-1\r\n", contactSet{}, "Invalid Contact Expires"},
		{"bad q", "Contact: <sip:a@b>;q=1.5\r\n", contactSet{}, "Invalid Contact q"},
		{"tel", "Contact: <tel:+15551234>\r\n", contactSet{}, "Unsupported Contact URI Scheme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseContacts(parseRegister(t, tc.headers))
			if tc.wantErr != "" {
				if err == nil || reason(err) != tc.wantErr {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(contactSet{}, contact{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidQ(t *testing.T) {
	for in, want := range map[string]bool{"0": true, "1": true, "0.5": true, "0.123": true, "1.000": true, "1.": true,
		"": false, "0.1234": false, "1.5": false, "2": false, ".5": false, "0,5": false} {
		if got := validQ(in); got != want {
			t.Errorf("validQ(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestSameURI(t *testing.T) {
	r := sip.Uri{Scheme: "sip", Host: "example.test"}
	for in, want := range map[string]bool{"sip:example.test": true, "sip:EXAMPLE.test:5060": true, "sip:example.test;transport=tcp": true,
		"sips:example.test": false, "sip:other.test": false, "sip:example.test:5070": false, "sip:1001@example.test": false, "garbage": false} {
		if got := sameURI(in, &r); got != want {
			t.Errorf("sameURI(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestUDPReadFilter(t *testing.T) {
	udp := sip.TransportReadProps{Transport: "UDP"}
	for in, pass := range map[string]bool{
		"REGISTER sip:x SIP/2.0\r\n": true, "SIP/2.0 200 OK\r\n": true, "\r\nOPTIONS sip:x SIP/2.0\r\n": true,
		"\r\n\r\n": false, "": false, "\x00\x01\x00\x00": false, "register sip:x SIP/2.0\r\n": true, "{\"json\":1}": false, "GET / HTTP/1.1": true,
	} {
		got, err := udpReadFilter(udp, []byte(in))
		if err != nil {
			t.Fatalf("udpReadFilter(%q) err = %v; an error would stop the listener", in, err)
		}
		if (got != nil) != pass {
			t.Errorf("udpReadFilter(%q) passes = %v, want %v", in, got != nil, pass)
		}
	}
	if got, _ := udpReadFilter(sip.TransportReadProps{Transport: "TCP"}, []byte("\r\n")); got == nil {
		t.Error("TCP data was filtered; stream chunks must pass")
	}
}
