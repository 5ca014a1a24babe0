package media

import (
	"encoding/hex"
	"math"
	"testing"
)

// Reference values: decoding and the full cross tables were produced with CPython 3.11's audioop
// (ulaw2lin, alaw2lin, lin2alaw(ulaw2lin(c)), lin2ulaw(alaw2lin(c))), an implementation independent
// of ours; encoding values follow ITU-T G.191 (one's complement for negative samples).

func TestULawDecodeKnownValues(t *testing.T) {
	for _, tc := range []struct {
		code byte
		want int16
	}{
		{0x00, -32124}, {0x0F, -16764}, {0x7E, -8}, {0x7F, 0},
		{0x80, 32124}, {0x8F, 16764}, {0xF0, 120}, {0xFE, 8}, {0xFF, 0},
	} {
		if got := ulawToLinear(tc.code); got != tc.want {
			t.Errorf("ulawToLinear(%#02x) = %d, want %d", tc.code, got, tc.want)
		}
	}
}

func TestALawDecodeKnownValues(t *testing.T) {
	for _, tc := range []struct {
		code byte
		want int16
	}{
		{0x00, -5504}, {0x2A, -32256}, {0x55, -8}, {0x54, -24},
		{0xD5, 8}, {0xD4, 24}, {0xAA, 32256}, {0x80, 5504}, {0xFF, 848},
	} {
		if got := alawToLinear(tc.code); got != tc.want {
			t.Errorf("alawToLinear(%#02x) = %d, want %d", tc.code, got, tc.want)
		}
	}
}

func TestEncodeKnownValues(t *testing.T) {
	for _, tc := range []struct {
		in         int16
		ulaw, alaw byte
	}{
		{-32768, 0x00, 0x2A}, {-32124, 0x00, 0x2A}, {-1000, 0x4E, 0x7A}, {-100, 0x73, 0x53},
		{-9, 0x7E, 0x55}, {-8, 0x7E, 0x55}, {-1, 0x7F, 0x55}, {0, 0xFF, 0xD5}, {1, 0xFF, 0xD5},
		{7, 0xFE, 0xD5}, {8, 0xFE, 0xD5}, {100, 0xF2, 0xD3}, {1000, 0xCE, 0xFA},
		{4000, 0xAF, 0x9A}, {32124, 0x80, 0xAA}, {32767, 0x80, 0xAA},
	} {
		if got := linearToULaw(tc.in); got != tc.ulaw {
			t.Errorf("linearToULaw(%d) = %#02x, want %#02x", tc.in, got, tc.ulaw)
		}
		if got := linearToALaw(tc.in); got != tc.alaw {
			t.Errorf("linearToALaw(%d) = %#02x, want %#02x", tc.in, got, tc.alaw)
		}
	}
}

func TestCrossTablesMatchReference(t *testing.T) {
	const u2a = "2a2b28292e2f2c2d22232021262724253a3b38393e3f3c3d32333031363734350b08090e0f0c0d02030001060704051a1b18191e1f1c1d12131011161714156b68696e6f6c6d62636061666764657b797e7f7c7d72737071767774754b494f4d42434041464744455a5b58595e5f5c5d525353505051515656575754545555d5aaaba8a9aeafacada2a3a0a1a6a7a4a5babbb8b9bebfbcbdb2b3b0b1b6b7b4b58b88898e8f8c8d82838081868784859a9b98999e9f9c9d9293909196979495ebe8e9eeefecede2e3e0e1e6e7e4e5fbf9fefffcfdf2f3f0f1f6f7f4f5cbc9cfcdc2c3c0c1c6c7c4c5dadbd8d9dedfdcddd2d2d3d3d0d0d1d1d6d6d7d7d4d4d5d5"
	const a2u = "292a27282d2e2b2c21221f2025262324393a37383d3e3b3c31322f30353633340a0b08090e0f0c0d02030001060704051a1b18191e1f1c1d121310111617141562636061666764655d5d5c5c5f5f5e5e747670727c7e787a6a6b68696e6f6c6d484946474c4d4a4b40413f3f44454243565754555a5b58594f4f4e4e52535051a9aaa7a8adaeabaca1a29fa0a5a6a3a4b9bab7b8bdbebbbcb1b2afb0b5b6b3b48a8b88898e8f8c8d82838081868784859a9b98999e9f9c9d9293909196979495e2e3e0e1e6e7e4e5dddddcdcdfdfdedef4f6f0f2fcfef8faeaebe8e9eeefecedc8c9c6c7cccdcacbc0c1bfbfc4c5c2c3d6d7d4d5dadbd8d9cfcfceced2d3d0d1"
	if got := hex.EncodeToString(ulawToALaw[:]); got != u2a {
		t.Errorf("μ-law→A-law table differs from reference:\n got %s\nwant %s", got, u2a)
	}
	if got := hex.EncodeToString(alawToULaw[:]); got != a2u {
		t.Errorf("A-law→μ-law table differs from reference:\n got %s\nwant %s", got, a2u)
	}
}

func TestG711RoundTrip(t *testing.T) {
	for c := 0; c < 256; c++ {
		want := byte(c)
		if want == 0x7F { // μ-law "negative zero" decodes to 0, which encodes as +0
			want = 0xFF
		}
		if got := linearToULaw(ulawToLinear(byte(c))); got != want {
			t.Errorf("μ-law %#02x: decode+encode = %#02x", c, got)
		}
		if got := linearToALaw(alawToLinear(byte(c))); got != byte(c) {
			t.Errorf("A-law %#02x: decode+encode = %#02x", c, got)
		}
		// μ→A→μ keeps the sign and stays close in amplitude.
		l0, l1 := float64(ulawToLinear(byte(c))), float64(ulawToLinear(alawToULaw[ulawToALaw[c]]))
		if math.Abs(l0-l1) > 16+math.Abs(l0)/16 || l0*l1 < 0 {
			t.Errorf("μ-law %#02x: via A-law %v -> %v", c, l0, l1)
		}
	}
}

func TestG711QuantisationErrorAndMonotonic(t *testing.T) {
	prevU, prevA := int16(math.MinInt16), int16(math.MinInt16)
	for x := math.MinInt16; x <= math.MaxInt16; x++ {
		s := int16(x)
		u, a := ulawToLinear(linearToULaw(s)), alawToLinear(linearToALaw(s))
		// Relative error of a logarithmic quantiser: at most half a step, a step being 1/16
		// of the segment; clipping adds up to 644 above ±32124 (μ-law) and 512 (A-law).
		limit := 16 + math.Abs(float64(x))/30
		if x > 32124 || x < -32124 {
			limit = 650
		}
		if d := math.Abs(float64(u) - float64(x)); d > limit {
			t.Fatalf("μ-law %d -> %d (error %v > %v)", x, u, d, limit)
		}
		if d := math.Abs(float64(a) - float64(x)); d > limit {
			t.Fatalf("A-law %d -> %d (error %v > %v)", x, a, d, limit)
		}
		if u < prevU || a < prevA {
			t.Fatalf("not monotonic at %d: μ %d<%d or A %d<%d", x, u, prevU, a, prevA)
		}
		prevU, prevA = u, a
	}
}

func TestDecodeAndRMS(t *testing.T) {
	if got := RMS(nil); got != 0 {
		t.Errorf("RMS(nil) = %v", got)
	}
	if got := RMS([]int16{3, -3, 3, -3}); got != 3 {
		t.Errorf("RMS(±3) = %v, want 3", got)
	}
	silence := []byte{ulawSilence, ulawSilence, 0x7F}
	if got := RMS(DecodeULaw(silence)); got != 0 {
		t.Errorf("RMS(μ-law silence) = %v", got)
	}
	if got := RMS(DecodeALaw([]byte{alawSilence, 0x55})); got != 8 {
		t.Errorf("RMS(A-law silence) = %v, want 8", got)
	}
	if got := DecodeULaw([]byte{0x00, 0x80}); got[0] != -32124 || got[1] != 32124 {
		t.Errorf("DecodeULaw = %v", got)
	}
	if got := DecodeALaw([]byte{0x2A, 0xAA}); got[0] != -32256 || got[1] != 32256 {
		t.Errorf("DecodeALaw = %v", got)
	}
}
