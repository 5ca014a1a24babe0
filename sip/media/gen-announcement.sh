#!/bin/sh
# Regenerates announcement.ulaw, the built-in "not recognized" announcement.
# The build never runs this: the output is committed and embedded with go:embed.
#
# Made on Debian 12 with espeak-ng 1.51+dfsg-10+deb12u2 and sox 14.4.2 from Debian's packages:
#   apt-get install -y espeak-ng sox
#
# Steps: espeak-ng (British English voice en-gb, 150 words/min, pitch 45) writes a 22.05 kHz
# PCM16 WAV (this version starts speaking at once and ends with ~0.45 s of silence; other versions
# lead in with ~0.2 s). sox removes rumble below 100 Hz, trims leading and trailing silence
# (below 0.5% of full scale), resamples to 8 kHz (very high quality band-limited resampler,
# repeatable dither -R), normalises the peak to -3 dBFS, pads a 50 ms lead-in and a 100 ms tail,
# and writes G.711 mu-law, 8 kHz mono, raw (no header).
# Result (2026-11-23): 29702 bytes = 3.713 s; speech from 50 ms to 3.61 s. Re-running this
# script reproduces the file byte for byte with the versions above.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
espeak-ng -v en-gb -s 150 -p 45 -w "$tmp/speech.wav" \
	"Extension is not recognized. Thank you for calling."
sox -R "$tmp/speech.wav" -t raw -e u-law -b 8 -c 1 -r 8000 announcement.ulaw \
	highpass 100 \
	silence 1 0.01 0.5% reverse silence 1 0.01 0.5% reverse \
	rate -v 8000 gain -n -3 pad 0.05 0.1
ls -l announcement.ulaw
