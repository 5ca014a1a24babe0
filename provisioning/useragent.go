package provisioning

import (
	"strings"

	"github.com/dialtone-voip/dialtone/store"
)

// UserAgent is what a Yealink HTTP User-Agent says about the phone.
type UserAgent struct {
	Model    string // as sent, without "SIP-", "SIP " or "VP-": "T54W", "T19P_E2", "W90DM"
	Firmware string // "96.86.0.100"; "" if absent
	MAC      string // 12 lower-case hex digits; "" if absent or ambiguous
}

// ParseUserAgent reads "Yealink SIP-<model> <firmware> <mac>" (yealink notes
// §2) and survives the variants seen in the field: any case of "Yealink",
// repeated spaces, no "SIP-" (DECT bases, CP, AX), "SIP VP-T49G",
// "Yealink-T46G", a MAC with or without colons, and no MAC at all. ok is
// false unless the string comes from a Yealink and names a model. Two
// different MACs make the MAC ambiguous, so it is left empty.
//
// The User-Agent is trivially forged: matching it only filters browsers and
// lazy scanners, it is never authentication.
func ParseUserAgent(s string) (ua UserAgent, ok bool) {
	if len(s) > 512 {
		return UserAgent{}, false
	}
	f := strings.Fields(s)
	if len(f) == 0 {
		return UserAgent{}, false
	}
	var rest []string
	switch first := strings.ToLower(f[0]); {
	case first == "yealink":
		rest = f[1:]
	case strings.HasPrefix(first, "yealink-") && len(first) > len("yealink-"):
		rest = append([]string{f[0][len("yealink-"):]}, f[1:]...)
	default:
		return UserAgent{}, false
	}
	if len(rest) > 0 && strings.EqualFold(rest[0], "SIP") {
		rest = rest[1:]
	}
	if len(rest) == 0 {
		return UserAgent{}, false
	}
	model := rest[0]
	for _, p := range []string{"SIP-", "VP-"} {
		if len(model) > len(p) && strings.EqualFold(model[:len(p)], p) {
			model = model[len(p):]
		}
	}
	if !validModelToken(model) {
		return UserAgent{}, false
	}
	ua.Model = model
	rest = rest[1:]
	if len(rest) > 0 && isFirmware(rest[0]) {
		ua.Firmware = rest[0]
		rest = rest[1:]
	}
	for _, tok := range rest {
		m, ok := store.NormalizeMAC(tok)
		if !ok {
			continue
		}
		if ua.MAC != "" && ua.MAC != m {
			ua.MAC = ""
			break
		}
		ua.MAC = m
	}
	return ua, true
}

func validModelToken(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// isFirmware reports whether s looks like a Yealink firmware version: at
// least three dot-separated numbers ("96.86.0.100").
func isFirmware(s string) bool {
	if len(s) > 32 {
		return false
	}
	parts := strings.Split(s, ".")
	if len(parts) < 3 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 6 {
			return false
		}
		for _, r := range p {
			if r < '0' || r > '9' {
				return false
			}
		}
	}
	return true
}
