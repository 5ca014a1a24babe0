// Package media holds everything about the "Extension is not recognized" announcement except
// the SIP signalling: the audio (embedded G.711, or an operator's WAV), the SDP offer/answer,
// the RTP port range and the paced RTP sender.
package media

import (
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"time"
)

// SampleRate is the G.711 sampling rate: 8000 samples (= bytes) per second.
const SampleRate = 8000

// Limits for an announcement's length.
const (
	MinDuration = 500 * time.Millisecond
	MaxDuration = 60 * time.Second
)

// RTP static payload types of G.711 (RFC 3551).
const (
	PayloadPCMU uint8 = 0 // μ-law
	PayloadPCMA uint8 = 8 // A-law
)

// ErrInvalidWAV is wrapped by every error LoadWAV returns for a file it refuses; the message says
// what is wrong and what is accepted.
var ErrInvalidWAV = errors.New("media: invalid announcement WAV")

// maxWAVBytes bounds what LoadWAV reads: 60 s of 16-bit PCM at the highest accepted rate plus room
// for other chunks.
const maxWAVBytes = 16 << 20

// Resampling of 16-bit PCM is offered for these input rates.
const (
	minResampleRate = 8000
	maxResampleRate = 96000
)

// The built-in announcement: "Extension is not recognized. Thank you for calling.", G.711 μ-law,
// 8 kHz mono, raw; made by gen-announcement.sh.
//
//go:embed announcement.ulaw
var defaultULaw []byte

// Announcement is an immutable 8 kHz mono clip held as both G.711 μ-law and A-law, so it can be
// sent without transcoding whichever of the two the caller offered. Safe for concurrent use.
type Announcement struct {
	ulaw []byte
	alaw []byte
}

var defaultAnnouncement = sync.OnceValue(func() *Announcement {
	return fromULaw(defaultULaw)
})

// Default returns the built-in announcement ("Extension is not recognized. Thank you for
// calling.", about 3.7 s). Every call returns the same immutable value.
func Default() *Announcement { return defaultAnnouncement() }

func fromULaw(u []byte) *Announcement {
	a := &Announcement{ulaw: append([]byte(nil), u...), alaw: make([]byte, len(u))}
	for i, c := range u {
		a.alaw[i] = ulawToALaw[c]
	}
	return a
}

func fromALaw(al []byte) *Announcement {
	a := &Announcement{ulaw: make([]byte, len(al)), alaw: append([]byte(nil), al...)}
	for i, c := range al {
		a.ulaw[i] = alawToULaw[c]
	}
	return a
}

func fromPCM(pcm []int16) *Announcement {
	a := &Announcement{ulaw: make([]byte, len(pcm)), alaw: make([]byte, len(pcm))}
	for i, s := range pcm {
		a.ulaw[i] = linearToULaw(s)
		a.alaw[i] = linearToALaw(s)
	}
	return a
}

// Duration is the playing time of the announcement.
func (a *Announcement) Duration() time.Duration {
	return time.Duration(len(a.ulaw)) * time.Second / SampleRate
}

// Payload returns a copy of the audio encoded for RTP payload type pt (PayloadPCMU or
// PayloadPCMA), one byte per sample; nil for any other payload type.
func (a *Announcement) Payload(pt uint8) []byte {
	switch pt {
	case PayloadPCMU:
		return append([]byte(nil), a.ulaw...)
	case PayloadPCMA:
		return append([]byte(nil), a.alaw...)
	}
	return nil
}

// samples returns the announcement's own bytes for pt (not copied) and the silence byte.
func (a *Announcement) samples(pt uint8) (audio []byte, silence byte, ok bool) {
	switch pt {
	case PayloadPCMU:
		return a.ulaw, ulawSilence, true
	case PayloadPCMA:
		return a.alaw, alawSilence, true
	}
	return nil, 0, false
}

// WAV format tags.
const (
	wavePCM        = 1
	waveALaw       = 6
	waveULaw       = 7
	waveExtensible = 0xFFFE
)

// LoadWAV reads a RIFF WAVE file to replace the built-in announcement. Accepted: mono, 8 kHz,
// 16-bit PCM, μ-law or A-law; 16-bit PCM mono at other rates (8 to 96 kHz, e.g. 16, 44.1 or
// 48 kHz) is resampled to 8 kHz. The clip must last from MinDuration to MaxDuration. Any other
// input is refused with an error wrapping ErrInvalidWAV that says why.
func LoadWAV(r io.Reader) (*Announcement, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxWAVBytes+1))
	if err != nil {
		return nil, fmt.Errorf("media: reading announcement WAV: %w", err)
	}
	if len(b) > maxWAVBytes {
		return nil, fmt.Errorf("%w: file larger than %d MiB", ErrInvalidWAV, maxWAVBytes>>20)
	}
	f, err := parseWAV(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalidWAV, err)
	}
	if f.channels != 1 {
		return nil, fmt.Errorf("%w: must be 8 kHz mono, got %d channels", ErrInvalidWAV, f.channels)
	}
	var a *Announcement
	switch {
	case (f.format == waveULaw || f.format == waveALaw) && f.bits == 8:
		if f.rate != SampleRate {
			return nil, fmt.Errorf("%w: must be 8 kHz mono, got G.711 at %d Hz", ErrInvalidWAV, f.rate)
		}
		if err := checkLength(len(f.data), SampleRate); err != nil {
			return nil, err
		}
		if f.format == waveULaw {
			a = fromULaw(f.data)
		} else {
			a = fromALaw(f.data)
		}
	case f.format == wavePCM && f.bits == 16:
		if f.rate < minResampleRate || f.rate > maxResampleRate {
			return nil, fmt.Errorf("%w: must be 8 kHz mono, got 16-bit PCM at %d Hz (rates from %d to %d Hz are resampled)",
				ErrInvalidWAV, f.rate, minResampleRate, maxResampleRate)
		}
		n := len(f.data) / 2
		if err := checkLength(n, f.rate); err != nil {
			return nil, err
		}
		pcm := make([]int16, n)
		for i := range pcm {
			pcm[i] = int16(binary.LittleEndian.Uint16(f.data[2*i:]))
		}
		if f.rate != SampleRate {
			pcm = resample(pcm, f.rate, SampleRate)
		}
		a = fromPCM(pcm)
	default:
		return nil, fmt.Errorf("%w: unsupported encoding (format tag %d, %d bits); use 8 kHz mono 16-bit PCM, μ-law or A-law",
			ErrInvalidWAV, f.format, f.bits)
	}
	// Resampling can change the count by a sample; check the result too.
	if d := a.Duration(); d < MinDuration || d > MaxDuration {
		return nil, fmt.Errorf("%w: %v long, must be from %v to %v", ErrInvalidWAV, d.Round(time.Millisecond), MinDuration, MaxDuration)
	}
	return a, nil
}

func checkLength(samples, rate int) error {
	d := time.Duration(samples) * time.Second / time.Duration(rate)
	switch {
	case d < MinDuration:
		return fmt.Errorf("%w: too short (%v), must be at least %v", ErrInvalidWAV, d.Round(time.Millisecond), MinDuration)
	case d > MaxDuration:
		return fmt.Errorf("%w: too long (%v), must be at most %v", ErrInvalidWAV, d.Round(time.Millisecond), MaxDuration)
	}
	return nil
}

type wavInfo struct {
	format, channels, rate, bits, blockAlign int
	data                                     []byte
}

// parseWAV walks the RIFF chunks of b and returns the format and the data chunk.
func parseWAV(b []byte) (wavInfo, error) {
	var f wavInfo
	if len(b) < 12 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return f, errors.New("not a RIFF WAVE file")
	}
	haveFmt, haveData := false, false
	for off := 12; off+8 <= len(b) && !(haveFmt && haveData); {
		id := string(b[off : off+4])
		size := uint64(binary.LittleEndian.Uint32(b[off+4:]))
		body := uint64(off + 8)
		rest := uint64(len(b)) - body
		if size > rest {
			// Streaming writers leave the data size at 0xFFFFFFFF: take the rest of the file.
			if id != "data" || size != math.MaxUint32 {
				return f, fmt.Errorf("%q chunk truncated (%d bytes declared, %d present)", id, size, rest)
			}
			size = rest
		}
		chunk := b[body : body+size]
		switch id {
		case "fmt ":
			if haveFmt {
				return f, errors.New("two fmt chunks")
			}
			if len(chunk) < 16 {
				return f, errors.New("fmt chunk too short")
			}
			haveFmt = true
			f.format = int(binary.LittleEndian.Uint16(chunk[0:]))
			f.channels = int(binary.LittleEndian.Uint16(chunk[2:]))
			f.rate = int(binary.LittleEndian.Uint32(chunk[4:]))
			f.blockAlign = int(binary.LittleEndian.Uint16(chunk[12:]))
			f.bits = int(binary.LittleEndian.Uint16(chunk[14:]))
			if f.format == waveExtensible {
				// WAVEFORMATEXTENSIBLE: cbSize(2) validBits(2) channelMask(4) subformat GUID(16),
				// whose first two bytes are the format tag.
				if len(chunk) < 40 {
					return f, errors.New("extensible fmt chunk too short")
				}
				f.format = int(binary.LittleEndian.Uint16(chunk[24:]))
			}
		case "data":
			if !haveFmt {
				return f, errors.New("data chunk before fmt chunk")
			}
			haveData = true
			f.data = chunk
		}
		off = int(body + size + size&1) // chunks are padded to even sizes
	}
	if !haveFmt {
		return f, errors.New("no fmt chunk")
	}
	if !haveData {
		return f, errors.New("no data chunk")
	}
	if f.channels > 0 && f.bits > 0 && f.blockAlign != f.channels*((f.bits+7)/8) {
		return f, fmt.Errorf("inconsistent fmt chunk (block align %d for %d channels of %d bits)", f.blockAlign, f.channels, f.bits)
	}
	return f, nil
}

// resample converts 16-bit PCM from rate in to rate out (out < in) with a windowed-sinc low-pass
// at 90% of the output Nyquist frequency (Blackman window, 8 zero crossings each side). The kernel
// is tabulated for up to 1024 fractional phases (exact for rates whose ratio to 8 kHz needs fewer).
func resample(x []int16, in, out int) []int16 {
	n := int(int64(len(x)) * int64(out) / int64(in))
	fc := 0.45 * float64(out) / float64(in) // cut-off in cycles per input sample
	const zeroCrossings = 8
	half := int(math.Ceil(zeroCrossings / (2 * fc)))
	taps := 2*half + 1
	g := gcd(in, out)
	phases := out / g // distinct fractional positions n*in/out mod 1
	if phases > 1024 {
		phases = 1024
	}
	kernel := make([]float64, phases*taps)
	for p := range phases {
		frac := float64(p) / float64(phases)
		k := kernel[p*taps : (p+1)*taps]
		var sum float64
		for j := range k {
			t := float64(j-half) - frac // distance from the output position, in input samples
			w := t / float64(half+1)
			if w <= -1 || w >= 1 {
				continue
			}
			win := 0.42 + 0.5*math.Cos(math.Pi*w) + 0.08*math.Cos(2*math.Pi*w)
			v := 2 * fc * win
			if t != 0 {
				v *= math.Sin(2*math.Pi*fc*t) / (2 * math.Pi * fc * t)
			}
			k[j] = v
			sum += v
		}
		for j := range k { // unity gain at DC
			k[j] /= sum
		}
	}
	y := make([]int16, n)
	for i := range y {
		pos := int64(i) * int64(in)
		base := int(pos / int64(out))
		p := int((pos%int64(out))*int64(phases)*2/int64(out)+1) / 2 // nearest phase
		if p == phases {
			base, p = base+1, 0
		}
		k := kernel[p*taps : (p+1)*taps]
		var acc float64
		start := base - half
		for j, c := range k {
			if idx := start + j; idx >= 0 && idx < len(x) {
				acc += c * float64(x[idx])
			}
		}
		y[i] = int16(max(math.MinInt16, min(math.MaxInt16, math.Round(acc))))
	}
	return y
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
