package sip

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// selfSigned returns a server certificate for 127.0.0.1 and a pool trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dialtone test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

func TestRegisterOverTLS(t *testing.T) {
	e := newEnv(t, Config{})
	cert, pool := selfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- e.srv.ServeTLS(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("ServeTLS() = %v, want nil on a clean stop", err)
		}
	})

	ua, err := sipgo.NewUA(sipgo.WithUserAgenTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(slog.New(slog.DiscardHandler))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	u := newUAC(t, cli, "TLS", ln.Addr().String(), "1001", e.password)
	if res := u.register("SHA-256", "Contact: <sip:1001@127.0.0.1:7600;transport=tls>"); res.StatusCode != 200 {
		t.Fatalf("REGISTER over TLS = %d, want 200", res.StatusCode)
	}
	bs := e.bindings(e.user)
	if len(bs) != 1 || bs[0].Transport != "tls" {
		t.Errorf("bindings = %+v, want one over tls", bs)
	}
}

func TestTCPIdleTimeout(t *testing.T) {
	e := newEnv(t, Config{TCPIdleTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", e.tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A connection that is used stays up while it is used...
	opts := "OPTIONS sip:example.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKidle1\r\n" +
		"From: <sip:a@example.test>;tag=1\r\nTo: <sip:example.test>\r\nCall-ID: idle@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	if _, err := c.Write([]byte(opts)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if msg := readStreamMessage(c); !strings.HasPrefix(string(msg), "SIP/2.0 200") {
		t.Fatalf("OPTIONS answer = %q, want 200", msg)
	}
	// ...and is closed by the server once it has been idle for the timeout.
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if !errors.Is(err, io.EOF) && !isConnReset(err) {
		t.Fatalf("read on idle connection = %v, want EOF (server closed it)", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %v, want about 200ms", d)
	}
}

func isConnReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func TestLarge200OverUDP(t *testing.T) {
	// Ten bindings with long contact URIs make a 200 far above sipgo's
	// default 1300-byte UDP limit; it must still arrive.
	e := newEnv(t, Config{})
	u := e.uac("UDP", "1001", e.password)
	var hdrs []string
	for i := 0; i < 10; i++ {
		hdrs = append(hdrs, fmt.Sprintf("Contact: <sip:1001@192.0.2.%d:5060;transport=udp;x-long-parameter=%s>", i+1, strings.Repeat("y", 100)))
	}
	res := u.register("MD5", hdrs...)
	if res.StatusCode != 200 {
		t.Fatalf("REGISTER = %d, want 200", res.StatusCode)
	}
	if n := len(contactsOf(res)); n != 10 {
		t.Errorf("200 lists %d contacts, want 10", n)
	}
	if size := len(res.String()); size < 1500 {
		t.Errorf("200 is only %d bytes; the test does not exercise the UDP limit", size)
	}
}
