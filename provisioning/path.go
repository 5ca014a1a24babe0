package provisioning

import "strings"

// fileKind is what a request path asks for.
type fileKind int

const (
	fileMAC    fileKind = iota + 1 // <mac>.cfg: the phone's own configuration
	fileCommon                     // y0000000000XX.cfg: the model family's common file
	fileBoot                       // <mac>.boot or y000000000000.boot: never served
)

// fileRequest is a parsed /p/{key}/{file} path.
type fileRequest struct {
	Key  string
	Kind fileKind
	MAC  string // fileMAC, fileBoot: 12 lower-case hex digits (fileBoot: "" for the common boot file)
	Code string // fileCommon: the 12 digits after "y"
}

// parsePath accepts exactly /p/{key}/{file} where key is 16 to 256 URL-safe
// characters and file is <mac>.cfg (hex in any case, as FusionPBX accepts),
// y<12 digits>.cfg, <mac>.boot or y<12 digits>.boot. Anything else ("..",
// extra segments, NUL, 13-digit MACs, other extensions) is refused, so no
// path can reach another file.
func parsePath(p string) (fileRequest, bool) {
	rest, ok := strings.CutPrefix(p, "/p/")
	if !ok {
		return fileRequest{}, false
	}
	key, file, ok := strings.Cut(rest, "/")
	if !ok || !validKey(key) || strings.Contains(file, "/") {
		return fileRequest{}, false
	}
	name, ext, ok := strings.Cut(file, ".")
	if !ok {
		return fileRequest{}, false
	}
	r := fileRequest{Key: key}
	switch ext {
	case "cfg":
		switch {
		case len(name) == 12 && isHex(name):
			r.Kind, r.MAC = fileMAC, strings.ToLower(name)
		case len(name) == 13 && name[0] == 'y' && isDigits(name[1:]):
			r.Kind, r.Code = fileCommon, name[1:]
		default:
			return fileRequest{}, false
		}
	case "boot":
		switch {
		case len(name) == 12 && isHex(name):
			r.Kind, r.MAC = fileBoot, strings.ToLower(name)
		case len(name) == 13 && name[0] == 'y' && isDigits(name[1:]):
			r.Kind = fileBoot
		default:
			return fileRequest{}, false
		}
	default:
		return fileRequest{}, false
	}
	return r, true
}

func validKey(s string) bool {
	if len(s) < 16 || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
