package media

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// Errors from ParseOffer. Answer ErrNoAudio and ErrNoG711 with 488 Not Acceptable Here (or 486 at
// once, as dialtone does for the announcement); ErrMalformedSDP with 400 or 488.
var (
	ErrNoAudio      = errors.New("media: SDP offer has no audio stream")
	ErrNoG711       = errors.New("media: SDP offer has no G.711 (PCMU/PCMA) audio over RTP/AVP")
	ErrMalformedSDP = errors.New("media: malformed SDP")
)

// Offer is what ParseOffer learnt from a caller's SDP offer.
type Offer struct {
	// RTP is where to send the announcement: the chosen stream's connection address (media- or
	// session-level c=) and port. Nil when the offer gives no destination: connection address
	// 0.0.0.0 or :: (hold), port 0 (stream disabled), or direction sendonly/inactive. The call can
	// still be answered (BuildAnswer), but nothing must be sent.
	RTP *net.UDPAddr
	// PayloadType is the chosen codec: PayloadPCMU (0) or PayloadPCMA (8), whichever the offerer
	// listed first in the chosen audio stream.
	PayloadType uint8

	streams []offeredStream // every m= line in order, to answer each of them
	chosen  int             // index in streams of the stream the announcement uses
	dir     string          // direction to put in the answer for the chosen stream
}

type offeredStream struct {
	media   string
	protos  []string
	formats []string
	port    int
}

// ParseOffer reads an SDP offer and picks the stream and codec for the announcement: the first
// audio stream over plain RTP (RTP/AVP or RTP/AVPF) that offers static payload type 0 (PCMU) or
// 8 (PCMA), with a non-zero port if there is such a stream. Errors wrap ErrNoAudio, ErrNoG711 or
// ErrMalformedSDP (which includes host names and multicast or broadcast connection addresses:
// the announcement is only ever sent to a unicast IP literal).
func ParseOffer(body []byte) (Offer, error) {
	var o Offer
	if len(bytes.TrimSpace(body)) == 0 {
		return o, fmt.Errorf("%w: empty body", ErrMalformedSDP)
	}
	if body[len(body)-1] != '\n' { // some user agents omit the final line break; pion needs it
		body = append(body[:len(body):len(body)], '\r', '\n')
	}
	var sd sdp.SessionDescription
	if err := unmarshalSDP(&sd, body); err != nil {
		return o, fmt.Errorf("%w: %v", ErrMalformedSDP, err)
	}
	chosen, fallback, audio := -1, -1, false
	for i, md := range sd.MediaDescriptions {
		s := offeredStream{media: md.MediaName.Media, protos: md.MediaName.Protos,
			formats: md.MediaName.Formats, port: md.MediaName.Port.Value}
		o.streams = append(o.streams, s)
		if s.media != "audio" {
			continue
		}
		audio = true
		if p := strings.Join(s.protos, "/"); p != "RTP/AVP" && p != "RTP/AVPF" {
			continue
		}
		if _, ok := g711Format(md); !ok {
			continue
		}
		if s.port != 0 && chosen < 0 {
			chosen = i
		}
		if fallback < 0 {
			fallback = i
		}
	}
	if chosen < 0 {
		chosen = fallback
	}
	switch {
	case len(sd.MediaDescriptions) == 0 || !audio:
		return Offer{}, ErrNoAudio
	case chosen < 0:
		return Offer{}, ErrNoG711
	}
	md := sd.MediaDescriptions[chosen]
	o.chosen = chosen
	o.PayloadType, _ = g711Format(md)

	ci := md.ConnectionInformation
	if ci == nil || ci.Address == nil {
		ci = sd.ConnectionInformation
	}
	if ci == nil || ci.Address == nil {
		return Offer{}, fmt.Errorf("%w: no connection address for the audio stream", ErrMalformedSDP)
	}
	host, _, _ := strings.Cut(ci.Address.Address, "/") // multicast TTL / address count
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return Offer{}, fmt.Errorf("%w: connection address %q is not an IP address", ErrMalformedSDP, host)
	}
	ip = ip.Unmap()
	if ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return Offer{}, fmt.Errorf("%w: connection address %s is not unicast", ErrMalformedSDP, ip)
	}

	offerDir := direction(md.Attributes)
	if offerDir == "" {
		offerDir = direction(sd.Attributes)
	}
	o.dir = "sendonly"
	if offerDir == "sendonly" || offerDir == "inactive" {
		o.dir = "inactive" // they don't want to receive; we never receive
	}
	if !ip.IsUnspecified() && o.streams[chosen].port != 0 && o.dir == "sendonly" {
		o.RTP = net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(o.streams[chosen].port)))
	}
	return o, nil
}

// unmarshalSDP runs pion's parser, turning a panic on hostile input into an error.
func unmarshalSDP(sd *sdp.SessionDescription, body []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("parser failed: %v", r)
		}
	}()
	return sd.Unmarshal(body)
}

// g711Format returns the first of the static payload types 0 and 8 in the offerer's order,
// unless an rtpmap remaps it to another codec.
func g711Format(md *sdp.MediaDescription) (uint8, bool) {
	for _, f := range md.MediaName.Formats {
		var pt uint8
		var name string
		switch f {
		case "0":
			pt, name = PayloadPCMU, "PCMU/8000"
		case "8":
			pt, name = PayloadPCMA, "PCMA/8000"
		default:
			continue
		}
		if rtpmapName(md, f, name) {
			return pt, true
		}
	}
	return 0, false
}

// rtpmapName reports whether format f has no rtpmap or one naming want (case-insensitively).
func rtpmapName(md *sdp.MediaDescription, f, want string) bool {
	for _, a := range md.Attributes {
		if a.Key != "rtpmap" {
			continue
		}
		pt, enc, ok := strings.Cut(strings.TrimSpace(a.Value), " ")
		if !ok || pt != f {
			continue
		}
		enc = strings.TrimSpace(enc)
		return strings.EqualFold(enc, want) || strings.EqualFold(enc, want+"/1")
	}
	return true
}

func direction(attrs []sdp.Attribute) string {
	for _, a := range attrs {
		switch a.Key {
		case "sendrecv", "sendonly", "recvonly", "inactive":
			return a.Key
		}
	}
	return ""
}

// BuildAnswer returns the SDP answer to offer for sending the announcement from localIP:localPort:
// the chosen stream with exactly the chosen codec, a=ptime:20 and a=sendonly (a=inactive when the
// offerer does not want to receive; port 0 when it disabled the stream), every other m= line of
// the offer rejected with port 0 as RFC 3264 requires. sessionID is used as o= session id and
// version. localIP must be the address the caller can reach (not unspecified).
func BuildAnswer(offer Offer, localIP net.IP, localPort int, sessionID uint64) ([]byte, error) {
	if localIP == nil || localIP.IsUnspecified() || localIP.To16() == nil {
		return nil, fmt.Errorf("media: answer needs a concrete local IP address, got %v", localIP)
	}
	if localPort <= 0 || localPort > 65535 {
		return nil, fmt.Errorf("media: answer needs a local port in 1..65535, got %d", localPort)
	}
	var codec string
	switch offer.PayloadType {
	case PayloadPCMU:
		codec = "PCMU"
	case PayloadPCMA:
		codec = "PCMA"
	default:
		return nil, fmt.Errorf("media: payload type %d is not G.711", offer.PayloadType)
	}
	addrType, ip := "IP4", localIP.String()
	if localIP.To4() == nil {
		addrType = "IP6"
	}
	streams, chosen, dir := offer.streams, offer.chosen, offer.dir
	if len(streams) == 0 { // an Offer built by hand
		streams, chosen = []offeredStream{{media: "audio", protos: []string{"RTP", "AVP"}, port: 1}}, 0
	}
	if dir == "" {
		dir = "sendonly"
	}
	ans := &sdp.SessionDescription{
		Origin: sdp.Origin{Username: "-", SessionID: sessionID, SessionVersion: sessionID,
			NetworkType: "IN", AddressType: addrType, UnicastAddress: ip},
		SessionName:           "-",
		ConnectionInformation: &sdp.ConnectionInformation{NetworkType: "IN", AddressType: addrType, Address: &sdp.Address{Address: ip}},
		TimeDescriptions:      []sdp.TimeDescription{{}},
	}
	for i, s := range streams {
		if i != chosen {
			f := "0"
			if len(s.formats) > 0 {
				f = s.formats[0]
			}
			ans.MediaDescriptions = append(ans.MediaDescriptions, &sdp.MediaDescription{
				MediaName: sdp.MediaName{Media: s.media, Port: sdp.RangedPort{Value: 0}, Protos: s.protos, Formats: []string{f}}})
			continue
		}
		port := localPort
		if s.port == 0 {
			port = 0
		}
		md := &sdp.MediaDescription{MediaName: sdp.MediaName{Media: "audio", Port: sdp.RangedPort{Value: port}, Protos: s.protos}}
		md.WithCodec(offer.PayloadType, codec, SampleRate, 0, "").
			WithValueAttribute("ptime", strconv.Itoa(packetMillis)).
			WithPropertyAttribute(dir)
		ans.MediaDescriptions = append(ans.MediaDescriptions, md)
	}
	return ans.Marshal()
}
