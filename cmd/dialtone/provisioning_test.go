package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/dialtone-voip/dialtone/store/storetest"
)

// TestProvisioningPlainHTTPWarning: a start without TLS warns that phones
// fetch files with SIP passwords over plain HTTP; with an https URL it does not.
func TestProvisioningPlainHTTPWarning(t *testing.T) {
	db := storetest.Open(t, nil)
	for _, c := range []struct {
		cfg  config
		warn bool
	}{
		{config{}, true},
		{config{ProvisioningURL: "http://prov.example.test:8080"}, true},
		{config{ProvisioningURL: "https://prov.example.test:8443"}, false},
		{config{TLSCert: "c.pem", TLSKey: "k.pem"}, false},
	} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		if _, err := newProvisioning(db, c.cfg, "127.0.0.1:8080", "127.0.0.1:5060", "example.test", nil, log, nil); err != nil {
			t.Fatal(err)
		}
		warned := strings.Contains(buf.String(), "level=WARN") && strings.Contains(buf.String(), "plain HTTP")
		if warned != c.warn {
			t.Errorf("%+v: warned %v, want %v; log:\n%s", c.cfg, warned, c.warn, buf.String())
		}
	}
}

// Phone configs name --phone-sip-server when it is set (several nodes:
// the name listing every node; a bare host name is resolved by the phones
// through NAPTR/SRV), else --sip-host, else nothing (the provisioning
// handler then uses the account's domain).
func TestPhoneSIPServer(t *testing.T) {
	for _, c := range []struct {
		cfg       config
		server    string
		port      int
		transport string
	}{
		{config{}, "", 5070, "udp"},
		{config{SIPHost: "sip1.example.test"}, "sip1.example.test", 5070, "udp"},
		{config{SIPHost: "sip1.example.test", PhoneSIPServer: "sip.example.test"}, "sip.example.test", 0, "dns-naptr"},
		{config{SIPHost: "sip1.example.test", PhoneSIPServer: "sip.example.test:5080"}, "sip.example.test", 5080, "udp"},
		{config{PhoneSIPServer: "192.0.2.10"}, "192.0.2.10", 5070, "udp"},
	} {
		server, port, transport := phoneSIPServer(c.cfg, 5070)
		if server != c.server || port != c.port || transport != c.transport {
			t.Errorf("%+v: %q %d %q, want %q %d %q", c.cfg, server, port, transport, c.server, c.port, c.transport)
		}
	}
}
