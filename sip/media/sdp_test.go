package media

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/pion/sdp/v3"
)

func crlf(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }

// Offers modelled on what real user agents send.
var (
	baresipOffer = crlf(`v=0
o=- 1394463337 3297924245 IN IP4 192.168.1.23
s=-
c=IN IP4 192.168.1.23
t=0 0
m=audio 10066 RTP/AVP 96 97 9 0 8 101
b=AS:128
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:97 G7221/32000
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
a=rtcp-rsize
`)
	yealinkOffer = crlf(`v=0
o=- 20012 20012 IN IP4 10.0.0.50
s=SDP data
c=IN IP4 10.0.0.50
t=0 0
m=audio 11796 RTP/AVP 8 0 9 18 101
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:9 G722/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=ptime:20
a=sendrecv
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
`)
	opusOnlyOffer = crlf(`v=0
o=- 4242 4242 IN IP4 203.0.113.9
s=-
c=IN IP4 203.0.113.9
t=0 0
m=audio 5004 RTP/AVP 111 101
a=rtpmap:111 opus/48000/2
a=rtpmap:101 telephone-event/48000
a=sendrecv
`)
	// Session-level c= only on an unrelated host; audio second, after a video stream, with its
	// own media-level c=.
	videoAudioOffer = []byte(`v=0
o=alice 2890844526 2890844526 IN IP4 198.51.100.1
s=-
c=IN IP4 198.51.100.1
t=0 0
m=video 51372 RTP/AVP 99
a=rtpmap:99 H264/90000
m=audio 49170 RTP/AVP 0
c=IN IP4 198.51.100.77
a=rtpmap:0 PCMU/8000
`)
	sessionLevelOffer = []byte(`v=0
o=- 1 1 IN IP4 172.16.0.4
s=-
c=IN IP4 172.16.0.4
t=0 0
m=audio 40000 RTP/AVP 8
`)
)

func offer(mline string, extra ...string) []byte {
	return []byte("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n" + mline + "\n" + strings.Join(append(extra, ""), "\n"))
}

func TestParseOffer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		body   []byte
		rtp    string // "" = nil
		pt     uint8
		answer string // direction expected in the answer
	}{
		{"baresip", baresipOffer, "192.168.1.23:10066", PayloadPCMU, "sendonly"},
		{"yealink PCMA first", yealinkOffer, "10.0.0.50:11796", PayloadPCMA, "sendonly"},
		{"session-level c=", sessionLevelOffer, "172.16.0.4:40000", PayloadPCMA, "sendonly"},
		{"media-level c= after video", videoAudioOffer, "198.51.100.77:49170", PayloadPCMU, "sendonly"},
		{"LF only, AVPF", offer("m=audio 3000 RTP/AVPF 8 0"), "192.0.2.1:3000", PayloadPCMA, "sendonly"},
		{"IPv6", []byte("v=0\no=- 1 1 IN IP6 2001:db8::1\ns=-\nc=IN IP6 2001:db8::1\nt=0 0\nm=audio 7078 RTP/AVP 0\n"), "[2001:db8::1]:7078", PayloadPCMU, "sendonly"},
		{"rtpmap remaps 0", offer("m=audio 4000 RTP/AVP 0 8", "a=rtpmap:0 opus/48000/2", "a=rtpmap:8 pcma/8000"), "192.0.2.1:4000", PayloadPCMA, "sendonly"},
		{"hold c=0.0.0.0", []byte("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 0.0.0.0\nt=0 0\nm=audio 4000 RTP/AVP 0\n"), "", PayloadPCMU, "sendonly"},
		{"port 0", offer("m=audio 0 RTP/AVP 8"), "", PayloadPCMA, "sendonly"},
		{"first audio disabled, second used", offer("m=audio 0 RTP/AVP 0", "m=audio 5000 RTP/AVP 8"), "192.0.2.1:5000", PayloadPCMA, "sendonly"},
		{"offer sendonly", offer("m=audio 4000 RTP/AVP 0", "a=sendonly"), "", PayloadPCMU, "inactive"},
		{"session inactive", []byte("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\na=inactive\nm=audio 4000 RTP/AVP 0\n"), "", PayloadPCMU, "inactive"},
		{"recvonly", offer("m=audio 4000 RTP/AVP 0", "a=recvonly"), "192.0.2.1:4000", PayloadPCMU, "sendonly"},
		{"no final line break", []byte("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8"), "192.0.2.1:4000", PayloadPCMA, "sendonly"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseOffer(tc.body)
			if err != nil {
				t.Fatalf("ParseOffer: %v", err)
			}
			got := ""
			if o.RTP != nil {
				got = o.RTP.String()
			}
			if got != tc.rtp || o.PayloadType != tc.pt {
				t.Errorf("RTP %q, PT %d; want %q, %d", got, o.PayloadType, tc.rtp, tc.pt)
			}
			if o.dir != tc.answer {
				t.Errorf("answer direction %q, want %q", o.dir, tc.answer)
			}
		})
	}
}

func TestParseOfferErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		body []byte
		want error
		msg  string
	}{
		{"opus only", opusOnlyOffer, ErrNoG711, ""},
		{"SRTP only", offer("m=audio 4000 RTP/SAVP 0 8"), ErrNoG711, ""},
		{"dynamic only", offer("m=audio 4000 RTP/AVP 96", "a=rtpmap:96 PCMU/8000"), ErrNoG711, ""},
		{"video only", offer("m=video 4000 RTP/AVP 99"), ErrNoAudio, ""},
		{"no media", []byte("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"), ErrNoAudio, ""},
		{"empty", nil, ErrMalformedSDP, "empty body"},
		{"garbage", []byte("hello, this is not SDP\x00\xff"), ErrMalformedSDP, ""},
		{"html", []byte("<html><body>nope</body></html>"), ErrMalformedSDP, ""},
		{"truncated", baresipOffer[:60], ErrMalformedSDP, ""},
		{"no c=", []byte("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=audio 4000 RTP/AVP 0\n"), ErrMalformedSDP, "no connection address"},
		{"hostname", []byte("v=0\no=- 1 1 IN IP4 pbx.example.com\ns=-\nc=IN IP4 pbx.example.com\nt=0 0\nm=audio 4000 RTP/AVP 0\n"), ErrMalformedSDP, "not an IP address"},
		{"multicast", []byte("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 224.2.1.1/127\nt=0 0\nm=audio 4000 RTP/AVP 0\n"), ErrMalformedSDP, "not unicast"},
		{"broadcast", []byte("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 255.255.255.255\nt=0 0\nm=audio 4000 RTP/AVP 0\n"), ErrMalformedSDP, "not unicast"},
		{"port out of range", offer("m=audio 70000 RTP/AVP 0"), ErrMalformedSDP, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseOffer(tc.body)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("ParseOffer = %+v, %v; want %v containing %q", o, err, tc.want, tc.msg)
			}
			if o.RTP != nil {
				t.Errorf("RTP set on error: %v", o.RTP)
			}
		})
	}
}

func TestBuildAnswerRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name    string
		offer   []byte
		ip      net.IP
		codec   string
		wantDir string
		mlines  []string // expected m= lines of the answer
	}{
		{"baresip PCMU", baresipOffer, net.IPv4(203, 0, 113, 5), "0 PCMU/8000", "sendonly",
			[]string{"audio 20000 RTP/AVP 0"}},
		{"yealink PCMA", yealinkOffer, net.IPv4(203, 0, 113, 5), "8 PCMA/8000", "sendonly",
			[]string{"audio 20000 RTP/AVP 8"}},
		{"video rejected", videoAudioOffer, net.IPv4(203, 0, 113, 5), "0 PCMU/8000", "sendonly",
			[]string{"video 0 RTP/AVP 99", "audio 20000 RTP/AVP 0"}},
		{"disabled first audio", offer("m=audio 0 RTP/AVP 0", "m=audio 5000 RTP/AVPF 8"), net.ParseIP("2001:db8::5"), "8 PCMA/8000", "sendonly",
			[]string{"audio 0 RTP/AVP 0", "audio 20000 RTP/AVPF 8"}},
		{"offer sendonly", offer("m=audio 4000 RTP/AVP 0", "a=sendonly"), net.IPv4(203, 0, 113, 5), "0 PCMU/8000", "inactive",
			[]string{"audio 20000 RTP/AVP 0"}},
		{"offer port 0", offer("m=audio 0 RTP/AVP 0"), net.IPv4(203, 0, 113, 5), "0 PCMU/8000", "sendonly",
			[]string{"audio 0 RTP/AVP 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseOffer(tc.offer)
			if err != nil {
				t.Fatal(err)
			}
			body, err := BuildAnswer(o, tc.ip, 20000, 123456789)
			if err != nil {
				t.Fatal(err)
			}
			var a sdp.SessionDescription
			if err := a.Unmarshal(body); err != nil {
				t.Fatalf("pion cannot parse our answer: %v\n%s", err, body)
			}
			addrType := "IP4"
			if tc.ip.To4() == nil {
				addrType = "IP6"
			}
			wantOrigin := sdp.Origin{Username: "-", SessionID: 123456789, SessionVersion: 123456789,
				NetworkType: "IN", AddressType: addrType, UnicastAddress: tc.ip.String()}
			if diff := cmp.Diff(wantOrigin, a.Origin); diff != "" {
				t.Errorf("o= (-want +got):\n%s", diff)
			}
			if c := a.ConnectionInformation; c == nil || c.AddressType != addrType || c.Address.Address != tc.ip.String() {
				t.Errorf("c= %v", c)
			}
			var mlines []string
			for _, md := range a.MediaDescriptions {
				mlines = append(mlines, md.MediaName.String())
			}
			if diff := cmp.Diff(tc.mlines, mlines); diff != "" {
				t.Fatalf("m= lines (-want +got):\n%s\n%s", diff, body)
			}
			md := a.MediaDescriptions[o.chosen]
			rtpmap, _ := md.Attribute("rtpmap")
			ptime, _ := md.Attribute("ptime")
			_, dir := md.Attribute(tc.wantDir)
			if rtpmap != tc.codec || ptime != "20" || !dir || len(md.Attributes) != 3 {
				t.Errorf("attributes %v, want rtpmap %q, ptime 20, %s\n%s", md.Attributes, tc.codec, tc.wantDir, body)
			}
			if !strings.HasSuffix(string(body), "\r\n") || strings.Contains(strings.ReplaceAll(string(body), "\r\n", ""), "\n") {
				t.Errorf("answer lines must end in CRLF:\n%q", body)
			}
		})
	}
}

func TestBuildAnswerErrors(t *testing.T) {
	o, err := ParseOffer(yealinkOffer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := BuildAnswer(o, nil, 20000, 1); err == nil {
		t.Error("nil IP accepted")
	}
	if _, err := BuildAnswer(o, net.IPv4zero, 20000, 1); err == nil {
		t.Error("0.0.0.0 accepted")
	}
	if _, err := BuildAnswer(o, net.IPv4(192, 0, 2, 1), 0, 1); err == nil {
		t.Error("port 0 accepted")
	}
	if _, err := BuildAnswer(Offer{PayloadType: 9}, net.IPv4(192, 0, 2, 1), 20000, 1); err == nil {
		t.Error("G.722 accepted")
	}
	// A hand-made Offer still gets a one-stream answer.
	body, err := BuildAnswer(Offer{PayloadType: PayloadPCMA}, net.IPv4(192, 0, 2, 1), 20000, 1)
	if err != nil || !strings.Contains(string(body), "m=audio 20000 RTP/AVP 8\r\n") || !strings.Contains(string(body), "a=sendonly") {
		t.Errorf("BuildAnswer(Offer{PCMA}) = %q, %v", body, err)
	}
}

func FuzzParseOffer(f *testing.F) {
	for _, s := range [][]byte{baresipOffer, yealinkOffer, opusOnlyOffer, videoAudioOffer, sessionLevelOffer,
		offer("m=audio 0 RTP/AVP 0", "m=audio 5000 RTP/AVP 8", "a=sendonly"),
		[]byte("v=0\no=- 1 1 IN IP6 ::1\ns=-\nc=IN IP6 ::\nt=0 0\nm=audio 1 RTP/AVP 8\n"),
		[]byte("garbage")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		o, err := ParseOffer(body)
		if err != nil {
			if !errors.Is(err, ErrMalformedSDP) && !errors.Is(err, ErrNoAudio) && !errors.Is(err, ErrNoG711) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if o.PayloadType != PayloadPCMU && o.PayloadType != PayloadPCMA {
			t.Fatalf("payload type %d", o.PayloadType)
		}
		if o.RTP != nil && (o.RTP.Port == 0 || o.RTP.IP.IsUnspecified() || o.RTP.IP.IsMulticast()) {
			t.Fatalf("bad destination %v", o.RTP)
		}
		ans, err := BuildAnswer(o, net.IPv4(192, 0, 2, 1), 20000, 7)
		if err != nil {
			t.Fatalf("BuildAnswer: %v", err)
		}
		var a sdp.SessionDescription
		if err := a.Unmarshal(ans); err != nil {
			t.Fatalf("answer does not parse: %v\n%s", err, ans)
		}
		if len(a.MediaDescriptions) != len(o.streams) {
			t.Fatalf("answer has %d m= lines, offer %d", len(a.MediaDescriptions), len(o.streams))
		}
	})
}
