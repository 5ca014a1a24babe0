package sip

import (
	"errors"
	"math"
	"net/url"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/dialtone-voip/dialtone/internal/digest"
)

// Limits on what a REGISTER may carry. Anything beyond them is answered 400:
// no phone needs more, and each one bounds the work a hostile request causes.
const (
	maxContacts      = 20   // Contact header values per REGISTER
	maxContactURILen = 512  // bytes of one contact URI as stored
	maxInstanceLen   = 256  // bytes of a +sip.instance value
	maxHeaderLen     = 4096 // bytes of any single header value
	maxHeaders       = 100  // header fields per request
	maxUserAgentLen  = 256  // bytes of User-Agent kept in a binding (longer ones are cut)
)

// errBadExpires is a malformed Expires header or contact expires parameter.
var errBadExpires = errors.New("malformed expires value")

// parseExpires reads an Expires header value or a contact's expires
// parameter (RFC 3261 §20.19: delta-seconds, 1*DIGIT). Surrounding
// whitespace is ignored. Values above 2^32-1 saturate at 2^32-1, as §20.19
// asks, so a huge value can never wrap into 0 ("remove"). Anything that is
// not a run of digits is errBadExpires: our policy is to answer such a
// REGISTER 400 rather than guess (§20.19's "treat as 3600" would turn a typo
// into a binding the phone did not ask for).
func parseExpires(s string) (uint32, error) {
	s = strings.Trim(s, " \t")
	if s == "" {
		return 0, errBadExpires
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, errBadExpires
		}
		if v <= math.MaxUint32 {
			v = v*10 + uint64(c-'0')
		}
	}
	if v > math.MaxUint32 {
		v = math.MaxUint32
	}
	return uint32(v), nil
}

// contact is one Contact of a REGISTER, checked and normalised.
type contact struct {
	URI        string // the contact URI as it will be stored and echoed
	InstanceID string // +sip.instance without its quotes, e.g. <urn:uuid:…>
	Q          string
	Expires    int64 // -1: no expires parameter
}

// contactSet is what the Contact headers of a REGISTER say.
type contactSet struct {
	Wildcard bool      // "Contact: *"
	Contacts []contact // empty (and no wildcard) means a query
}

// parseContacts extracts and checks every Contact of req (RFC 3261 §10.3
// step 6). It returns a badRequest (see reason) for:
// a wildcard beside other contacts, more than maxContacts contacts, a
// contact URI that is not sip/sips with a host, an oversized URI or
// +sip.instance, a malformed q or expires parameter.
func parseContacts(req *sip.Request) (contactSet, error) {
	var cs contactSet
	hdrs := req.GetHeaders("Contact")
	if len(hdrs) > maxContacts {
		return cs, badRequest("Too Many Contacts")
	}
	for _, h := range hdrs {
		ch, ok := h.(*sip.ContactHeader)
		if !ok || ch == nil {
			return cs, badRequest("Malformed Contact")
		}
		if ch.Address.Wildcard {
			cs.Wildcard = true
			if len(ch.Params) > 0 {
				return cs, badRequest("Malformed Contact")
			}
			continue
		}
		c, err := parseContact(ch)
		if err != nil {
			return cs, err
		}
		cs.Contacts = append(cs.Contacts, c)
	}
	if cs.Wildcard && len(hdrs) != 1 {
		return contactSet{}, badRequest("Wildcard Contact Not Alone")
	}
	return cs, nil
}

// parseContact checks one parsed Contact header.
func parseContact(ch *sip.ContactHeader) (contact, error) {
	c := contact{Expires: -1}
	u := &ch.Address
	scheme := strings.ToLower(u.Scheme)
	if scheme != "sip" && scheme != "sips" {
		return c, badRequest("Unsupported Contact URI Scheme")
	}
	if u.Host == "" || strings.ContainsAny(u.Host, " \t\r\n\x00<>\"") || u.Port < 0 || u.Port > 65535 {
		return c, badRequest("Malformed Contact URI")
	}
	c.URI = u.String()
	if len(c.URI) > maxContactURILen || strings.ContainsAny(c.URI, " \t\r\n\x00<>") {
		return c, badRequest("Malformed Contact URI")
	}
	for _, kv := range ch.Params {
		// sipgo keeps whitespace around '=' inside names and values; trim it.
		key := strings.ToLower(strings.Trim(kv.K, " \t"))
		val := strings.Trim(kv.V, " \t")
		switch key {
		case "expires":
			e, err := parseExpires(val)
			if err != nil {
				return c, badRequest("Invalid Contact Expires")
			}
			c.Expires = int64(e)
		case "q":
			if !validQ(val) {
				return c, badRequest("Invalid Contact q")
			}
			c.Q = val
		case "+sip.instance":
			v := strings.Trim(val, `"`)
			if len(v) > maxInstanceLen || strings.ContainsAny(v, " \t\r\n\x00\"") {
				return c, badRequest("Invalid Contact Instance")
			}
			c.InstanceID = v
		}
	}
	return c, nil
}

// validQ reports whether s is an RFC 3261 qvalue: "0" ["." 0*3DIGIT] or "1" ["." 0*3("0")].
func validQ(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	if s[0] != '0' && s[0] != '1' {
		return false
	}
	if len(s) == 1 {
		return true
	}
	if s[1] != '.' {
		return false
	}
	for i := 2; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' || s[0] == '1' && s[i] != '0' {
			return false
		}
	}
	return true
}

// Digest algorithms we accept (RFC 8760 order of preference).
const (
	algSHA256 = digest.SHA256
	algMD5    = digest.MD5
)

// parseAuthorization parses and checks the shape of a Digest Authorization
// (or Proxy-Authorization) header value with the registrar's rules
// (internal/digest.Parse: qop=auth required).
func parseAuthorization(v string) (*digest.Credentials, error) {
	return digest.Parse(v, digest.ParseOptions{})
}

// unescapeUser decodes %-escapes in a SIP URI user part (RFC 3261 §19.1.4:
// URIs compare after unescaping). An invalid escape leaves s as it is.
func unescapeUser(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	u, err := url.PathUnescape(s)
	if err != nil {
		return s
	}
	return u
}

// sameURI reports whether the digest uri names the Request-URI. Clients
// quote it in different spellings (parameter order, case of the host, a
// default port), so both are parsed and compared on scheme, user, host and
// port; an exact string match is accepted at once.
func sameURI(credURI string, r *sip.Uri) bool {
	if credURI == r.String() {
		return true
	}
	var c sip.Uri
	if err := sip.ParseUri(credURI, &c); err != nil {
		return false
	}
	return strings.EqualFold(c.Scheme, r.Scheme) &&
		unescapeUser(c.User) == unescapeUser(r.User) &&
		strings.EqualFold(c.Host, r.Host) &&
		effectivePort(c.Port, c.Scheme) == effectivePort(r.Port, r.Scheme)
}

func effectivePort(p int, scheme string) int {
	if p != 0 {
		return p
	}
	if strings.EqualFold(scheme, "sips") {
		return 5061
	}
	return 5060
}

// badRequest is a request refused with 400; its value is the reason phrase
// to send (SIP reason phrases are capitalised by convention, RFC 3261
// §21.4), its Error text the same words in Go's style.
type badRequest string

func (e badRequest) Error() string { return "bad request: " + strings.ToLower(string(e)) }

// reason is the reason phrase for err: a badRequest's own words, else the
// generic one.
func reason(err error) string {
	var br badRequest
	if errors.As(err, &br) {
		return string(br)
	}
	return "Bad Request"
}
