// Command digestgen writes, one per line, Digest Authorization header values
// for a benchmark of the provisioning server (scripts/bench-provisioning.sh).
//
// The server refuses a replayed Authorization (each nonce's count must grow),
// so every request of the benchmark needs a fresh one. digestgen first asks
// the server for -nonces challenges (one unauthenticated GET each, answered
// 401), then writes an endless stream: line i answers nonce i mod n with
// nc = i/n + 1 (RFC 7616 §3.4), computed with the password the way a phone
// computes it. Consecutive uses of one nonce are n lines apart, so with n far
// above the number of connections they reach the server in order. wrk reads
// one line per request (scripts/digest.lua); the stream stops when the
// reader goes away.
package main

import (
	"bufio"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
)

func main() {
	target := flag.String("url", "", "the file's URL (http://host/p/key/mac.cfg)")
	user := flag.String("user", "", "provisioning username")
	pass := flag.String("pass", "", "provisioning password")
	ua := flag.String("ua", "", "User-Agent of the challenge requests")
	n := flag.Int("nonces", 4096, "challenges to fetch; each request uses the next one in turn")
	limit := flag.Int("count", 0, "lines to write (0: until the reader closes)")
	out := flag.String("out", "", "write to this file (a FIFO) instead of stdout, opened once the challenges are in")
	ready := flag.String("ready", "", "create this file once the challenges are in (before opening -out)")
	flag.Parse()
	if err := run(*target, *user, *pass, *ua, *n, *limit, *out, *ready); err != nil && !errors.Is(err, syscall.EPIPE) {
		fmt.Fprintln(os.Stderr, "digestgen:", err)
		os.Exit(1)
	}
}

type challenge struct{ realm, nonce, opaque string }

func run(target, user, pass, ua string, n, limit int, out, ready string) error {
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return fmt.Errorf("bad -url %q", target)
	}
	if n < 1 {
		return errors.New("-nonces must be at least 1")
	}
	uri := u.RequestURI()
	chals := make([]challenge, n)
	for i := range chals {
		if chals[i], err = fetchChallenge(target, ua); err != nil {
			return err
		}
	}
	ha1 := make([]string, n)
	cnonce := make([]string, n)
	for i, c := range chals {
		ha1[i] = md5hex(user + ":" + c.realm + ":" + pass)
		var b [8]byte
		_, _ = rand.Read(b[:])
		cnonce[i] = hex.EncodeToString(b[:])
	}
	ha2 := md5hex("GET:" + uri)
	if ready != "" {
		if err := os.WriteFile(ready, nil, 0o644); err != nil {
			return err
		}
	}
	dst := os.Stdout
	if out != "" {
		f, err := os.OpenFile(out, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		dst = f
	}
	w := bufio.NewWriterSize(dst, 64<<10)
	line := make([]byte, 0, 512)
	for i := 0; limit == 0 || i < limit; i++ {
		k := i % n
		nc := fmt.Sprintf("%08x", i/n+1)
		c := chals[k]
		resp := md5hex(ha1[k] + ":" + c.nonce + ":" + nc + ":" + cnonce[k] + ":auth:" + ha2)
		line = line[:0]
		line = append(line, `Digest username="`...)
		line = append(line, user...)
		line = append(line, `", realm="`...)
		line = append(line, c.realm...)
		line = append(line, `", nonce="`...)
		line = append(line, c.nonce...)
		line = append(line, `", uri="`...)
		line = append(line, uri...)
		line = append(line, `", algorithm=MD5, qop=auth, nc=`...)
		line = append(line, nc...)
		line = append(line, `, cnonce="`...)
		line = append(line, cnonce[k]...)
		line = append(line, `", response="`...)
		line = append(line, resp...)
		line = append(line, '"')
		if c.opaque != "" {
			line = append(line, `, opaque="`...)
			line = append(line, c.opaque...)
			line = append(line, '"')
		}
		line = append(line, '\n')
		if _, err := w.Write(line); err != nil {
			return err
		}
	}
	return w.Flush()
}

// fetchChallenge sends one GET without credentials and reads the Digest
// challenge of the 401.
func fetchChallenge(target, ua string) (challenge, error) {
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		return challenge{}, err
	}
	req.Header.Set("User-Agent", ua)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return challenge{}, err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		return challenge{}, fmt.Errorf("GET without credentials = %d, want 401", res.StatusCode)
	}
	h := res.Header.Get("WWW-Authenticate")
	p := params(strings.TrimPrefix(h, "Digest "))
	c := challenge{realm: p["realm"], nonce: p["nonce"], opaque: p["opaque"]}
	if c.nonce == "" || !strings.Contains(p["qop"], "auth") {
		return challenge{}, fmt.Errorf("unexpected challenge %q", h)
	}
	if a := p["algorithm"]; a != "" && !strings.EqualFold(a, "MD5") {
		return challenge{}, fmt.Errorf("challenge algorithm %q, want MD5", a)
	}
	return c, nil
}

// params splits `a="x", b=y` into a map (enough for our own challenges).
func params(s string) map[string]string {
	out := map[string]string{}
	for s != "" {
		s = strings.TrimLeft(s, " ,")
		name, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			end := strings.IndexByte(rest[1:], '"')
			if end < 0 {
				break
			}
			v, s = rest[1:1+end], rest[2+end:]
		} else {
			v, s, _ = strings.Cut(rest, ",")
		}
		out[strings.ToLower(strings.TrimSpace(name))] = strings.TrimSpace(v)
	}
	return out
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}
