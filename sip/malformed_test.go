package sip

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var fixtureSeq atomic.Int64

// loadFixture reads a raw message from testdata/malformed. Its first line
// is "; expect <status|drop>[,…]"; the rest is the message with LF line
// ends and the placeholders {transport}, {branch} and {callid}.
func loadFixture(t *testing.T, path, transport string) (msg []byte, expect []string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	first, rest, _ := strings.Cut(string(data), "\n")
	spec, ok := strings.CutPrefix(first, "; expect ")
	if !ok {
		t.Fatalf("%s: first line %q is not '; expect …'", path, first)
	}
	n := fixtureSeq.Add(1)
	rest = strings.NewReplacer("{transport}", transport, "{branch}", fmt.Sprintf("fx%d%d", n, time.Now().UnixNano()),
		"{callid}", fmt.Sprintf("fixture-%d@test", n)).Replace(rest)
	rest = strings.ReplaceAll(rest, "\r\n", "\n")
	rest = strings.ReplaceAll(rest, "\n", "\r\n")
	return []byte(rest), strings.Split(strings.TrimSpace(spec), ",")
}

// TestMalformed sends every fixture raw over UDP and TCP: each gets the
// expected answer (or none), nothing panics, and the server still answers.
func TestMalformed(t *testing.T) {
	e := newEnv(t, Config{})
	files, err := filepath.Glob("testdata/malformed/*.sip")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, transport := range []string{"UDP", "TCP"} {
		network := strings.ToLower(transport)
		t.Run(transport, func(t *testing.T) {
			for _, f := range files {
				t.Run(strings.TrimSuffix(filepath.Base(f), ".sip"), func(t *testing.T) {
					t.Parallel()
					msg, expect := loadFixture(t, f, transport)
					wait := 2 * time.Second
					if slices.Contains(expect, "drop") {
						wait = 500 * time.Millisecond
					}
					res := rawExchange(t, network, e.addr(transport), msg, wait)
					got := "drop"
					if res != nil {
						got = strconv.Itoa(res.StatusCode)
					}
					if !slices.Contains(expect, got) {
						t.Errorf("got %s, want one of %v", got, expect)
						if res != nil {
							t.Logf("response:\n%s", res)
						}
					}
				})
			}
		})
		// Still alive and answering on this transport.
		u := e.uac(transport, "1001", e.password)
		if res := u.register("SHA-256", "Contact: <sip:1001@127.0.0.1:7400>"); res.StatusCode != 200 {
			t.Fatalf("%s REGISTER after the fixtures = %d, want 200", transport, res.StatusCode)
		}
	}
	if n := counterValue(t, e.srv.metrics.handlerPanics); n != 0 {
		t.Errorf("handler panics = %v, want 0", n)
	}
}
