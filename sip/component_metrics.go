package sip

import (
	"github.com/prometheus/client_golang/prometheus"
)

// The components' own metrics, each registered by its constructor on the
// endpoint's registerer (the endpoint's are in metrics.go).

// proxyMetrics are the Proxy's (invite.go, fork.go).
type proxyMetrics struct {
	invites     *prometheus.CounterVec // by outcome (store.Outcome*)
	activeCalls prometheus.Gauge
}

func newProxyMetrics(reg prometheus.Registerer) (*proxyMetrics, error) {
	m := &proxyMetrics{
		invites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialtone_sip_invites_total",
			Help: "Initial INVITEs handled, by outcome (announced_busy, routed, answered, unavailable, not_found, forbidden, cancelled, busy, failed). Digest challenges are not counted.",
		}, []string{"outcome"}),
		activeCalls: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dialtone_sip_active_calls",
			Help: "INVITEs being handled right now (announcing, ringing or being set up).",
		}),
	}
	if err := registerAll(reg, m.invites, m.activeCalls); err != nil {
		return nil, err
	}
	return m, nil
}

// announcerMetrics are the Announcer's (announce.go).
type announcerMetrics struct {
	announcements prometheus.Counter
	rtpPackets    prometheus.Counter
}

func newAnnouncerMetrics(reg prometheus.Registerer) (*announcerMetrics, error) {
	m := &announcerMetrics{
		announcements: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialtone_sip_announcements_played_total",
			Help: "Announcements started (183 with SDP sent) for calls to disabled targets.",
		}),
		rtpPackets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialtone_sip_rtp_packets_sent_total",
			Help: "RTP packets of the announcement sent.",
		}),
	}
	if err := registerAll(reg, m.announcements, m.rtpPackets); err != nil {
		return nil, err
	}
	return m, nil
}

// notifierMetrics are the Notifier's (notify.go).
type notifierMetrics struct {
	checkSyncs *prometheus.CounterVec // by result
}

// Check-sync results (the result label of dialtone_sip_check_sync_total).
const (
	checkSyncOK             = "ok"              // a 2xx came back
	checkSyncNoRegistration = "no_registration" // the device has no live binding
	checkSyncNoFlow         = "no_flow"         // its TCP/TLS connection is gone
	checkSyncRejected       = "rejected"        // the phone answered non-2xx
	checkSyncError          = "error"           // timeout, transport or store error
)

func newNotifierMetrics(reg prometheus.Registerer) (*notifierMetrics, error) {
	m := &notifierMetrics{
		checkSyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialtone_sip_check_sync_total",
			Help: "check-sync NOTIFYs per device registration, by result (ok, rejected, no_flow, no_registration, error).",
		}, []string{"result"}),
	}
	if err := registerAll(reg, m.checkSyncs); err != nil {
		return nil, err
	}
	return m, nil
}
