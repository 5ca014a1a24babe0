package main

import (
	"log/slog"
	"net"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dialtone-voip/dialtone/internal/guard"
	"github.com/dialtone-voip/dialtone/provisioning"
	"github.com/dialtone-voip/dialtone/store"
)

// newProvisioning builds the Yealink provisioning handler. boundAddr is the
// provisioning listener's real address; domain is the default account's.
// It warns when phones would fetch their files, which carry SIP passwords,
// over plain HTTP (docs/provisioning.md, "HTTPS").
func newProvisioning(db *store.DB, cfg config, boundAddr, sipAddr, domain string, g *guard.Guard, log *slog.Logger, reg prometheus.Registerer) (*provisioning.Handler, error) {
	ext := provisioningURL(cfg, boundAddr, domain)
	server, port, transport := phoneSIPServer(cfg, portOf(sipAddr))
	h, err := provisioning.NewHandler(db, provisioning.Config{
		SIPServer:       server,
		SIPPort:         port,
		SIPTransport:    transport,
		RegisterExpires: cfg.DefaultExpires,
		ExternalURL:     ext,
		NTPServer:       cfg.NTPServer,
		TimeZone:        cfg.TimeZone,
		Guard:           g,
	}, log, reg)
	if err != nil {
		return nil, err
	}
	switch {
	case !strings.HasPrefix(strings.ToLower(ext), "https://"):
		log.Warn("provisioning is served over plain HTTP: phones fetch files with SIP passwords in clear; configure --tls-cert/--tls-key",
			"url", ext, "tls", false)
	case !cfg.tls():
		log.Info("provisioning listener is plain HTTP; phones use HTTPS, so TLS must be terminated in front of it", "url", ext)
	}
	return h, nil
}

// phoneSIPServer is the SIP server phone configs name, its port and
// transport: --phone-sip-server, else --sip-host (empty: the account's
// domain) on sipPort over UDP. Several nodes need the two apart: phones
// register to a name that lists every node, so another node takes them
// when theirs is gone, while a node's Record-Route must name the node
// itself, which holds the phone's flow and its dialogs. A
// --phone-sip-server that is a host name without a port is resolved by the
// phones per RFC 3263 (NAPTR, SRV, A: "dns-naptr"); HOST:PORT or an IP
// address is dialled as given.
func phoneSIPServer(cfg config, sipPort int) (server string, port int, transport string) {
	if cfg.PhoneSIPServer == "" {
		return cfg.SIPHost, sipPort, "udp"
	}
	if host, p, err := net.SplitHostPort(cfg.PhoneSIPServer); err == nil {
		n, _ := strconv.Atoi(p)
		return host, n, "udp"
	}
	if net.ParseIP(cfg.PhoneSIPServer) != nil {
		return cfg.PhoneSIPServer, sipPort, "udp"
	}
	return cfg.PhoneSIPServer, 0, "dns-naptr"
}

// provisioningURL is --provisioning-url, or a URL built from the address
// phones can most likely reach: --sip-host, the listen host, or the domain.
func provisioningURL(cfg config, boundAddr, domain string) string {
	if cfg.ProvisioningURL != "" {
		return cfg.ProvisioningURL
	}
	scheme := "http"
	if cfg.tls() {
		scheme = "https"
	}
	host, port, _ := net.SplitHostPort(boundAddr)
	if cfg.SIPHost != "" {
		host = cfg.SIPHost
	} else if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = domain
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}
