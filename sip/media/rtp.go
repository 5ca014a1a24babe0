package media

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/pion/rtp"
)

const (
	packetMillis   = 20
	packetInterval = packetMillis * time.Millisecond
	packetSamples  = SampleRate * packetMillis / 1000 // 160 samples = 160 bytes of G.711
)

// ErrNoDestination is returned by Play for a nil or unusable destination address.
var ErrNoDestination = errors.New("media: no RTP destination")

// Stats describes one Play run.
type Stats struct {
	Packets  int           // RTP packets sent
	Bytes    int           // payload bytes sent (the RTCP "sender's octet count")
	Duration time.Duration // from the first packet until Play returned
}

// Play sends a once, as RTP from conn to dst with payload type pt (PayloadPCMU or PayloadPCMA):
// one random SSRC, random initial sequence number and timestamp, the marker bit on the first
// packet, 160 bytes (20 ms) per packet with the last one padded with silence, paced against a
// monotonic schedule (packet i leaves at start + i×20 ms; after a stall the late packets go out at
// once). It returns when the announcement has been played out (one interval after the last
// packet, so a final response sent next does not cut it short), with a nil error, or as soon as
// ctx is done, with ctx.Err(), or on the first write error. Nothing is sent to any address but
// dst; Play does not read from conn, start goroutines, or allocate per packet.
func Play(ctx context.Context, conn *net.UDPConn, dst *net.UDPAddr, pt uint8, a *Announcement) (Stats, error) {
	var st Stats
	if conn == nil || a == nil {
		return st, errors.New("media: Play needs a conn and an announcement")
	}
	audio, silence, ok := a.samples(pt)
	if !ok {
		return st, fmt.Errorf("media: payload type %d is not G.711", pt)
	}
	if dst == nil {
		return st, ErrNoDestination
	}
	to := dst.AddrPort()
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	if !to.Addr().IsValid() || to.Addr().IsUnspecified() || to.Port() == 0 {
		return st, fmt.Errorf("%w: %v", ErrNoDestination, dst)
	}
	if err := ctx.Err(); err != nil {
		return st, err
	}

	pkt := rtp.Packet{Header: rtp.Header{
		Version:        2,
		PayloadType:    pt,
		SequenceNumber: uint16(rand.Uint32()),
		Timestamp:      rand.Uint32(),
		SSRC:           rand.Uint32(),
		Marker:         true,
	}}
	var (
		scratch [12 + packetSamples]byte // marshalled packet: fixed header, no CSRC/extension
		last    [packetSamples]byte      // the padded final packet
	)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	start := time.Now()
	wait := func(at time.Time) error {
		d := time.Until(at) // monotonic: start carries a monotonic reading
		if d <= 0 {
			return ctx.Err()
		}
		timer.Reset(d)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return nil
		}
	}
	packets := (len(audio) + packetSamples - 1) / packetSamples
	for i := range packets {
		if i > 0 {
			if err := wait(start.Add(time.Duration(i) * packetInterval)); err != nil {
				st.Duration = time.Since(start)
				return st, err
			}
		}
		chunk := audio[i*packetSamples : min(len(audio), (i+1)*packetSamples)]
		if len(chunk) < packetSamples {
			n := copy(last[:], chunk)
			for j := n; j < len(last); j++ {
				last[j] = silence
			}
			chunk = last[:]
		}
		pkt.Payload = chunk
		n, err := pkt.MarshalTo(scratch[:])
		if err == nil {
			_, err = conn.WriteToUDPAddrPort(scratch[:n], to)
		}
		if err != nil {
			st.Duration = time.Since(start)
			return st, fmt.Errorf("media: sending RTP to %v: %w", to, err)
		}
		st.Packets++
		st.Bytes += len(chunk)
		pkt.Marker = false
		pkt.SequenceNumber++
		pkt.Timestamp += packetSamples
	}
	err := wait(start.Add(time.Duration(packets) * packetInterval))
	st.Duration = time.Since(start)
	return st, err
}
