package media_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/dialtone-voip/dialtone/sip/media"
)

// The announcement flow for a call to a disabled extension, minus the SIP signalling: parse the
// INVITE's offer, take an RTP socket from the range, answer in the 183, play, then send 486.
func Example() {
	phone, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}) // the caller's RTP socket
	if err != nil {
		panic(err)
	}
	defer phone.Close()
	offer := fmt.Appendf(nil, "v=0\r\no=- 20012 20012 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"+
		"m=audio %d RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n",
		phone.LocalAddr().(*net.UDPAddr).Port)
	ports, err := media.NewPorts(20000, 20999) // from configuration
	if err != nil {
		panic(err)
	}
	o, err := media.ParseOffer(offer)
	if err != nil { // ErrNoG711 / ErrNoAudio / ErrMalformedSDP: answer 486 (or 488) at once
		panic(err)
	}
	// Bind on the media IP from configuration.
	conn, err := ports.Allocate(net.IPv4(127, 0, 0, 1))
	if err != nil { // ErrNoPorts: answer without media (486)
		panic(err)
	}
	defer conn.Close() // releases the port
	local := conn.LocalAddr().(*net.UDPAddr)
	answer, err := media.BuildAnswer(o, net.IPv4(203, 0, 113, 5) /* advertised IP */, local.Port, 42)
	if err != nil {
		panic(err)
	}
	// The 183 Session Progress body (Content-Type: application/sdp); CRLF line ends.
	fmt.Print(strings.NewReplacer("\r\n", "\n", fmt.Sprint(local.Port), "PORT").Replace(string(answer)))

	// ctx ends on CANCEL (tx.OnCancel) or shutdown; o.RTP is nil when the caller wants no media.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if o.RTP != nil {
		st, err := media.Play(ctx, conn.UDPConn, o.RTP, o.PayloadType, media.Default())
		_, _ = st, err // err == nil: played to the end; then 486 Busy Here
	}
	// Output:
	// v=0
	// o=- 42 42 IN IP4 203.0.113.5
	// s=-
	// c=IN IP4 203.0.113.5
	// t=0 0
	// m=audio PORT RTP/AVP 8
	// a=rtpmap:8 PCMA/8000
	// a=ptime:20
	// a=sendonly
}
