package media

import "math"

// G.711 conversions, written after the ITU-T G.191 software tools library reference
// (ulaw_compress/ulaw_expand, alaw_compress/alaw_expand). Linear samples are 16-bit PCM.

// Silence bytes: the codes closest to zero amplitude.
const (
	ulawSilence = 0xFF // +0 in μ-law
	alawSilence = 0xD5 // +8 (smallest positive step) in A-law
)

// ulawToLinear expands one μ-law byte to 16-bit linear PCM (range ±32124).
func ulawToLinear(u byte) int16 {
	m := ^u
	exponent := (m >> 4) & 0x07
	mantissa := int32(m & 0x0F)
	step := int32(4) << (exponent + 1)
	v := (int32(0x80) << exponent) + step*mantissa + step/2 - 4*33
	if u < 0x80 {
		v = -v
	}
	return int16(v)
}

// linearToULaw compresses one 16-bit linear PCM sample to μ-law.
func linearToULaw(s int16) byte {
	x := int32(s)
	var abs int32
	if x < 0 {
		abs = (^x)>>2 + 33 // one's complement magnitude, 14 bits, plus bias
	} else {
		abs = x>>2 + 33
	}
	if abs > 0x1FFF {
		abs = 0x1FFF
	}
	seg := int32(1)
	for i := abs >> 6; i != 0; i >>= 1 {
		seg++
	}
	high := 8 - seg
	low := 0x0F - (abs>>seg)&0x0F
	out := byte(high<<4 | low)
	if x >= 0 {
		out |= 0x80
	}
	return out
}

// alawToLinear expands one A-law byte to 16-bit linear PCM (range ±32256).
func alawToLinear(a byte) int16 {
	ix := (a ^ 0x55) & 0x7F
	exponent := ix >> 4
	mant := int32(ix & 0x0F)
	if exponent > 0 {
		mant += 16
	}
	mant = mant<<4 + 8
	if exponent > 1 {
		mant <<= exponent - 1
	}
	if a > 127 {
		return int16(mant)
	}
	return int16(-mant)
}

// linearToALaw compresses one 16-bit linear PCM sample to A-law.
func linearToALaw(s int16) byte {
	x := int32(s)
	var ix int32
	if x < 0 {
		ix = (^x) >> 4 // one's complement magnitude, 12 bits
	} else {
		ix = x >> 4
	}
	if ix > 15 {
		exp := int32(1)
		for ix > 16+15 {
			ix >>= 1
			exp++
		}
		ix -= 16
		ix += exp << 4
	}
	if x >= 0 {
		ix |= 0x80
	}
	return byte(ix) ^ 0x55
}

// ulawToALaw maps every μ-law code to the A-law code of the same decoded amplitude
// (μ-law → linear PCM16 → A-law).
var ulawToALaw = func() (t [256]byte) {
	for i := range t {
		t[i] = linearToALaw(ulawToLinear(byte(i)))
	}
	return t
}()

// alawToULaw maps every A-law code to the μ-law code of the same decoded amplitude.
var alawToULaw = func() (t [256]byte) {
	for i := range t {
		t[i] = linearToULaw(alawToLinear(byte(i)))
	}
	return t
}()

// DecodeULaw expands G.711 μ-law bytes to 16-bit linear PCM.
func DecodeULaw(b []byte) []int16 {
	out := make([]int16, len(b))
	for i, c := range b {
		out[i] = ulawToLinear(c)
	}
	return out
}

// DecodeALaw expands G.711 A-law bytes to 16-bit linear PCM.
func DecodeALaw(b []byte) []int16 {
	out := make([]int16, len(b))
	for i, c := range b {
		out[i] = alawToLinear(c)
	}
	return out
}

// RMS returns the root mean square of pcm, in linear units (0 to 32768); 0 for no samples.
// Speech at a normal level is a few thousand; G.711 silence is below 10.
func RMS(pcm []int16) float64 {
	if len(pcm) == 0 {
		return 0
	}
	var sum float64
	for _, s := range pcm {
		f := float64(s)
		sum += f * f
	}
	return math.Sqrt(sum / float64(len(pcm)))
}
