package main

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"
)

// The guard's memory of addresses with good registrations survives a
// restart: after one, another user's password guesses from an office's
// address block only that user, and the office's phone keeps registering.
// Blocks of SIP and provisioning are listed together by the admin API.
func TestTrustSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	a := start(t, dir)
	const base = "/api/v1/accounts/default"
	password := map[string]string{}
	for _, ext := range []string{"1003", "1004"} {
		_, u := a.api("POST", base+"/users", map[string]string{"extension": ext, "name": "User " + ext})
		_, cred := a.api("GET", base+"/users/"+u["id"].(string)+"/sip-credentials", nil)
		password[ext] = cred["password"].(string)
	}
	office := newPhone(t, "UDP", a.addrs.SIPUDP, "example.test", "1003", password["1003"])
	if res := office.register("sip:1003@127.0.0.1:5096", 600, "MD5"); res.StatusCode != 200 {
		t.Fatalf("REGISTER = %d", res.StatusCode)
	}
	a.stop()

	b := start(t, dir)
	guesser := newPhone(t, "UDP", b.addrs.SIPUDP, "example.test", "1004", "guess")
	for i := range 12 {
		if res := guesser.register("sip:1004@127.0.0.1:5097", 600, "MD5"); res.StatusCode != 401 && res.StatusCode != 403 {
			t.Fatalf("guess %d = %d, want 401 or 403", i, res.StatusCode)
		}
	}
	office = newPhone(t, "UDP", b.addrs.SIPUDP, "example.test", "1003", password["1003"])
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	res, err := office.tryRegister(ctx, "sip:1003@127.0.0.1:5096", 600, "MD5")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("the office's phone after a restart and another user's guesses = %v %v, want 200", res, err)
	}

	// A key scanner on provisioning, from the same address.
	for range 10 {
		r, err := http.Get("http://" + b.addrs.Provisioning + "/p/" + strings.Repeat("A", 32) + "/805ec0aabbcc.cfg")
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
	}
	_, list := b.api("GET", "/api/v1/security/blocks", nil)
	var got []string
	for _, x := range list["blocks"].([]any) {
		m := x.(map[string]any)
		got = append(got, fmt.Sprint(m["protocol"], " ", m["source"], " ", m["user"]))
	}
	sort.Strings(got)
	want := []string{"provisioning 127.0.0.1 <nil>", "sip 127.0.0.1 1004@example.test"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("blocks = %q, want %q", got, want)
	}
}
