package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTLS: `dialtone cert` writes a pair; with it, the admin API speaks HTTPS
// (and refuses plain HTTP), and a phone registers over SIP TLS.
func TestTLS(t *testing.T) {
	certDir := t.TempDir()
	var out strings.Builder
	if err := runCert([]string{"--out", certDir, "--host", "localhost,127.0.0.1"}, &out, io.Discard); err != nil {
		t.Fatalf("dialtone cert: %v", err)
	}
	certFile, keyFile := filepath.Join(certDir, "cert.pem"), filepath.Join(certDir, "key.pem")
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("cert.pem holds no certificate")
	}
	tlsConf := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}

	a := start(t, t.TempDir(), "--tls-cert", certFile, "--tls-key", keyFile, "--sip-tls-addr", "127.0.0.1:0")
	if a.addrs.SIPTLS == "" {
		t.Fatal("no SIP TLS listener")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}}
	call := func(method, path string) (int, map[string]any) {
		req, _ := http.NewRequest(method, "https://"+a.addrs.Admin+path, strings.NewReader(`{"extension":"1010","name":"Tls User"}`))
		req.Header.Set("Authorization", "Bearer "+testToken)
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s https %s: %v", method, path, err)
		}
		defer res.Body.Close()
		var m map[string]any
		json.NewDecoder(res.Body).Decode(&m)
		return res.StatusCode, m
	}
	code, u := call("POST", "/api/v1/accounts/default/users")
	if code != 201 {
		t.Fatalf("POST /users over HTTPS = %d %v", code, u)
	}
	if res, err := http.Get("http://" + a.addrs.Admin + "/healthz"); err == nil {
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Fatal("the admin API answers plain HTTP although TLS is configured")
		}
	}
	_, cred := call("GET", "/api/v1/accounts/default/users/"+u["id"].(string)+"/sip-credentials")
	p := newPhoneTLS(t, "TLS", a.addrs.SIPTLS, "example.test", "1010", cred["password"].(string), tlsConf)
	if res := p.register("sips:1010@127.0.0.1:5099;transport=tls", 600, "SHA-256"); res.StatusCode != 200 {
		t.Fatalf("REGISTER over TLS = %d %s", res.StatusCode, res.Reason)
	}
	_, regs := call("GET", "/api/v1/accounts/default/users/"+u["id"].(string)+"/registrations")
	list, _ := regs["registrations"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["transport"] != "tls" {
		t.Fatalf("registrations = %v, want one over tls", regs)
	}
}
