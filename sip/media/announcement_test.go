package media

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// wavFile builds a RIFF WAVE file. extra chunks (id+body) are placed between fmt and data.
func wavFile(format, channels, rate, bits int, data []byte, extra ...[]byte) []byte {
	le := binary.LittleEndian
	fmtChunk := make([]byte, 16)
	le.PutUint16(fmtChunk[0:], uint16(format))
	le.PutUint16(fmtChunk[2:], uint16(channels))
	le.PutUint32(fmtChunk[4:], uint32(rate))
	blockAlign := channels * ((bits + 7) / 8)
	le.PutUint32(fmtChunk[8:], uint32(rate*blockAlign))
	le.PutUint16(fmtChunk[12:], uint16(blockAlign))
	le.PutUint16(fmtChunk[14:], uint16(bits))
	var body bytes.Buffer
	body.WriteString("WAVE")
	chunk := func(id string, b []byte) {
		body.WriteString(id)
		_ = binary.Write(&body, le, uint32(len(b)))
		body.Write(b)
		if len(b)%2 == 1 {
			body.WriteByte(0)
		}
	}
	chunk("fmt ", fmtChunk)
	for _, e := range extra {
		chunk(string(e[:4]), e[4:])
	}
	chunk("data", data)
	var out bytes.Buffer
	out.WriteString("RIFF")
	_ = binary.Write(&out, le, uint32(body.Len()))
	out.Write(body.Bytes())
	return out.Bytes()
}

// sine returns d of a sine tone of freq Hz and peak amplitude amp at rate Hz.
func sine(freq float64, amp float64, rate int, d time.Duration) []int16 {
	n := int(d * time.Duration(rate) / time.Second)
	s := make([]int16, n)
	for i := range s {
		s[i] = int16(amp * math.Sin(2*math.Pi*freq*float64(i)/float64(rate)))
	}
	return s
}

func pcmBytes(s []int16) []byte {
	b := make([]byte, 2*len(s))
	for i, v := range s {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(v))
	}
	return b
}

func encode(s []int16, f func(int16) byte) []byte {
	b := make([]byte, len(s))
	for i, v := range s {
		b[i] = f(v)
	}
	return b
}

func TestDefaultAnnouncement(t *testing.T) {
	a := Default()
	if a != Default() {
		t.Error("Default() returns different values")
	}
	d := a.Duration()
	if d < 2*time.Second || d > 6*time.Second {
		t.Fatalf("Default().Duration() = %v, want 2..6 s", d)
	}
	u, al := a.Payload(PayloadPCMU), a.Payload(PayloadPCMA)
	if len(u) != len(al) || time.Duration(len(u))*time.Second/SampleRate != d {
		t.Fatalf("payload lengths μ %d, A %d for %v", len(u), len(al), d)
	}
	ru, ra := RMS(DecodeULaw(u)), RMS(DecodeALaw(al))
	if ru < 1000 || ra < 1000 {
		t.Errorf("decoded RMS μ %.0f, A %.0f: want speech (> 1000)", ru, ra)
	}
	if math.Abs(ru-ra)/ru > 0.05 {
		t.Errorf("μ-law RMS %.0f and A-law RMS %.0f differ", ru, ra)
	}
	// Short lead-in: speech starts within the first 150 ms.
	pcm := DecodeULaw(u)
	first := -1
	for i, s := range pcm {
		if s > 1000 || s < -1000 {
			first = i
			break
		}
	}
	if first < 0 || first > 150*SampleRate/1000 {
		t.Errorf("speech starts at sample %d, want within 150 ms", first)
	}
	if a.Payload(9) != nil {
		t.Error("Payload(9) != nil")
	}
	u[0] ^= 0xFF // Payload returns a copy
	if Default().Payload(PayloadPCMU)[0] == u[0] {
		t.Error("Payload exposes the announcement's own buffer")
	}
}

func TestLoadWAVAccepts(t *testing.T) {
	t.Parallel()
	tone := sine(1000, 10000, 8000, time.Second) // RMS ≈ 7071
	list := append([]byte("LIST"), []byte("INFOISFT\x05\x00\x00\x00sox!\x00")...)
	odd := append([]byte("junk"), 1, 2, 3) // odd-sized chunk, padded
	for _, tc := range []struct {
		name string
		file []byte
		rms  float64
		d    time.Duration
	}{
		{"pcm16 8k", wavFile(wavePCM, 1, 8000, 16, pcmBytes(tone)), 7071, time.Second},
		{"pcm16 8k with LIST and odd chunk", wavFile(wavePCM, 1, 8000, 16, pcmBytes(tone), list, odd), 7071, time.Second},
		{"ulaw 8k", wavFile(waveULaw, 1, 8000, 8, encode(tone, linearToULaw)), 7071, time.Second},
		{"alaw 8k", wavFile(waveALaw, 1, 8000, 8, encode(tone, linearToALaw)), 7071, time.Second},
		{"pcm16 44.1k resampled", wavFile(wavePCM, 1, 44100, 16, pcmBytes(sine(1000, 10000, 44100, 2*time.Second))), 7071, 2 * time.Second},
		{"pcm16 48k resampled", wavFile(wavePCM, 1, 48000, 16, pcmBytes(sine(1000, 10000, 48000, time.Second))), 7071, time.Second},
		{"pcm16 16k resampled", wavFile(wavePCM, 1, 16000, 16, pcmBytes(sine(300, 10000, 16000, time.Second))), 7071, time.Second},
		{"max length", wavFile(waveULaw, 1, 8000, 8, bytes.Repeat([]byte{0x80, 0x00}, 60*SampleRate/2)), 32124, MaxDuration},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := LoadWAV(bytes.NewReader(tc.file))
			if err != nil {
				t.Fatalf("LoadWAV: %v", err)
			}
			if got := a.Duration(); got != tc.d {
				t.Errorf("Duration = %v, want %v", got, tc.d)
			}
			for _, pt := range []uint8{PayloadPCMU, PayloadPCMA} {
				var pcm []int16
				if pt == PayloadPCMU {
					pcm = DecodeULaw(a.Payload(pt))
				} else {
					pcm = DecodeALaw(a.Payload(pt))
				}
				// Skip the resampler's edge transients.
				if got := RMS(pcm[100 : len(pcm)-100]); math.Abs(got-tc.rms)/tc.rms > 0.05 {
					t.Errorf("pt %d: RMS %.0f, want ≈ %.0f", pt, got, tc.rms)
				}
			}
		})
	}
	t.Run("ulaw and alaw kept bit-exact", func(t *testing.T) {
		u := encode(tone, linearToULaw)
		a, err := LoadWAV(bytes.NewReader(wavFile(waveULaw, 1, 8000, 8, u)))
		if err != nil || !bytes.Equal(a.Payload(PayloadPCMU), u) {
			t.Errorf("μ-law WAV not kept as is (err %v)", err)
		}
		al := encode(tone, linearToALaw)
		a, err = LoadWAV(bytes.NewReader(wavFile(waveALaw, 1, 8000, 8, al)))
		if err != nil || !bytes.Equal(a.Payload(PayloadPCMA), al) {
			t.Errorf("A-law WAV not kept as is (err %v)", err)
		}
	})
	t.Run("extensible", func(t *testing.T) {
		f := wavFile(wavePCM, 1, 8000, 16, pcmBytes(tone))
		// Rewrite the 16-byte fmt chunk into a 40-byte WAVE_FORMAT_EXTENSIBLE one.
		le := binary.LittleEndian
		fmtExt := make([]byte, 40)
		copy(fmtExt, f[20:36])
		le.PutUint16(fmtExt[0:], waveExtensible)
		le.PutUint16(fmtExt[16:], 22)
		le.PutUint16(fmtExt[24:], wavePCM)
		var b bytes.Buffer
		b.WriteString("RIFF")
		_ = binary.Write(&b, le, uint32(len(f)-8+24))
		b.WriteString("WAVEfmt ")
		_ = binary.Write(&b, le, uint32(40))
		b.Write(fmtExt)
		b.Write(f[36:])
		a, err := LoadWAV(&b)
		if err != nil || a.Duration() != time.Second {
			t.Fatalf("LoadWAV(extensible) = %v, %v", a, err)
		}
	})
	t.Run("streamed data size", func(t *testing.T) {
		f := wavFile(wavePCM, 1, 8000, 16, pcmBytes(tone))
		binary.LittleEndian.PutUint32(f[40:], math.MaxUint32)
		a, err := LoadWAV(bytes.NewReader(f))
		if err != nil || a.Duration() != time.Second {
			t.Fatalf("LoadWAV(data size 0xFFFFFFFF) = %v, %v", a, err)
		}
	})
}

func TestLoadWAVResamplerFiltersAliases(t *testing.T) {
	t.Parallel()
	// A 6 kHz tone is above the 4 kHz Nyquist limit of 8 kHz audio: it must be filtered out,
	// not folded back to 2 kHz.
	a, err := LoadWAV(bytes.NewReader(wavFile(wavePCM, 1, 44100, 16, pcmBytes(sine(6000, 10000, 44100, time.Second)))))
	if err != nil {
		t.Fatal(err)
	}
	if got := RMS(DecodeULaw(a.Payload(PayloadPCMU))[100:7900]); got > 100 {
		t.Errorf("6 kHz tone after resampling to 8 kHz: RMS %.0f, want < 100", got)
	}
}

func TestLoadWAVRejects(t *testing.T) {
	t.Parallel()
	tone := pcmBytes(sine(1000, 10000, 8000, time.Second))
	truncated := wavFile(wavePCM, 1, 8000, 16, tone)
	truncated = truncated[:len(truncated)-100]
	dataFirst := []byte("RIFF\x0c\x00\x00\x00WAVEdata\x00\x00\x00\x00")
	badAlign := wavFile(wavePCM, 1, 8000, 16, tone)
	binary.LittleEndian.PutUint16(badAlign[32:], 4)
	for _, tc := range []struct {
		name, want string
		file       []byte
	}{
		{"empty", "not a RIFF WAVE", nil},
		{"garbage", "not a RIFF WAVE", []byte("this is not a wav file at all, it is text")},
		{"mp3", "not a RIFF WAVE", append([]byte("ID3\x03\x00\x00\x00"), make([]byte, 100)...)},
		{"stereo", "must be 8 kHz mono, got 2 channels", wavFile(wavePCM, 2, 8000, 16, tone)},
		{"ulaw 16k", "must be 8 kHz mono, got G.711 at 16000 Hz", wavFile(waveULaw, 1, 16000, 8, tone)},
		{"pcm16 6k", "must be 8 kHz mono, got 16-bit PCM at 6000 Hz", wavFile(wavePCM, 1, 6000, 16, tone)},
		{"pcm16 192k", "must be 8 kHz mono, got 16-bit PCM at 192000 Hz", wavFile(wavePCM, 1, 192000, 16, tone)},
		{"pcm 24 bit", "unsupported encoding (format tag 1, 24 bits)", wavFile(wavePCM, 1, 8000, 24, tone[:15000])},
		{"float", "unsupported encoding (format tag 3, 32 bits)", wavFile(3, 1, 8000, 32, tone)},
		{"too short", "too short (200ms)", wavFile(wavePCM, 1, 8000, 16, tone[:3200])},
		{"too short 44.1k", "too short (400ms)", wavFile(wavePCM, 1, 44100, 16, make([]byte, 2*17640))},
		{"too long", "too long (1m0.5s)", wavFile(waveULaw, 1, 8000, 8, make([]byte, 60*8000+4000))},
		{"truncated", `"data" chunk truncated`, truncated},
		{"no data", "no data chunk", wavFile(wavePCM, 1, 8000, 16, nil)[:36]},
		{"data before fmt", "data chunk before fmt", dataFirst},
		{"inconsistent", "inconsistent fmt chunk", badAlign},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.file
			if tc.name == "no data" { // fix the RIFF size after cutting the data chunk
				binary.LittleEndian.PutUint32(f[4:], uint32(len(f)-8))
			}
			a, err := LoadWAV(bytes.NewReader(f))
			if err == nil {
				t.Fatalf("LoadWAV accepted it: %v long", a.Duration())
			}
			if !errors.Is(err, ErrInvalidWAV) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want ErrInvalidWAV containing %q", err, tc.want)
			}
		})
	}
	t.Run("too large", func(t *testing.T) {
		_, err := LoadWAV(bytes.NewReader(make([]byte, maxWAVBytes+10)))
		if !errors.Is(err, ErrInvalidWAV) || !strings.Contains(err.Error(), "larger than 16 MiB") {
			t.Errorf("error %v", err)
		}
	})
}

func FuzzLoadWAV(f *testing.F) {
	tone := sine(440, 8000, 8000, 600*time.Millisecond)
	f.Add(wavFile(wavePCM, 1, 8000, 16, pcmBytes(tone)))
	f.Add(wavFile(waveULaw, 1, 8000, 8, encode(tone, linearToULaw)))
	f.Add(wavFile(waveALaw, 1, 8000, 8, encode(tone, linearToALaw), append([]byte("LIST"), 1, 2, 3)))
	f.Add(wavFile(wavePCM, 1, 11025, 16, pcmBytes(sine(440, 8000, 11025, 600*time.Millisecond))))
	f.Add(wavFile(wavePCM, 2, 8000, 16, pcmBytes(tone)))
	f.Add([]byte("RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := LoadWAV(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrInvalidWAV) {
				t.Fatalf("error does not wrap ErrInvalidWAV: %v", err)
			}
			return
		}
		if d := a.Duration(); d < MinDuration || d > MaxDuration {
			t.Fatalf("accepted %v", d)
		}
		if len(a.Payload(PayloadPCMU)) != len(a.Payload(PayloadPCMA)) {
			t.Fatal("μ-law and A-law lengths differ")
		}
	})
}
