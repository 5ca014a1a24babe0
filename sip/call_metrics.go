package sip

import (
	"github.com/prometheus/client_golang/prometheus"
)

// callMetrics are the call-handling metrics (invite.go, announce.go,
// proxy.go, notify.go). They are registered on the registerer given to New.
type callMetrics struct {
	invites       *prometheus.CounterVec // by outcome (store.Outcome*)
	announcements prometheus.Counter
	rtpPackets    prometheus.Counter
	activeCalls   prometheus.Gauge
	checkSyncs    *prometheus.CounterVec // by result
}

// Check-sync results (the result label of dialtone_sip_check_sync_total).
const (
	checkSyncOK             = "ok"              // a 2xx came back
	checkSyncNoRegistration = "no_registration" // the device has no live binding
	checkSyncNoFlow         = "no_flow"         // its TCP/TLS connection is gone
	checkSyncRejected       = "rejected"        // the phone answered non-2xx
	checkSyncError          = "error"           // timeout, transport or store error
)

func newCallMetrics(reg prometheus.Registerer) (*callMetrics, error) {
	m := &callMetrics{
		invites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialtone_sip_invites_total",
			Help: "Initial INVITEs handled, by outcome (announced_busy, routed, answered, unavailable, not_found, forbidden, cancelled, busy, failed). Digest challenges are not counted.",
		}, []string{"outcome"}),
		announcements: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialtone_sip_announcements_played_total",
			Help: "Announcements started (183 with SDP sent) for calls to disabled targets.",
		}),
		rtpPackets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialtone_sip_rtp_packets_sent_total",
			Help: "RTP packets of the announcement sent.",
		}),
		activeCalls: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dialtone_sip_active_calls",
			Help: "INVITEs being handled right now (announcing, ringing or being set up).",
		}),
		checkSyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialtone_sip_check_sync_total",
			Help: "check-sync NOTIFYs per device registration, by result (ok, rejected, no_flow, no_registration, error).",
		}, []string{"result"}),
	}
	if err := registerAll(reg, m.invites, m.announcements, m.rtpPackets, m.activeCalls, m.checkSyncs); err != nil {
		return nil, err
	}
	return m, nil
}
