package sip

import "github.com/prometheus/client_golang/prometheus"

// transportMetrics are the SIP transport's own metrics: connections, the
// accept loop, the UDP source table and the front door.
type transportMetrics struct {
	connsOpen       *prometheus.GaugeVec   // by transport
	connsRefused    *prometheus.CounterVec // by reason: global, per_ip
	acceptErrors    prometheus.Counter
	streamClosed    *prometheus.CounterVec // by reason
	udpSources      prometheus.Gauge
	udpRotations    prometheus.Counter
	frontDoor       *prometheus.CounterVec // by result: 400, 501, 513, drop
	retransmissions prometheus.Counter     // fast path (fastpath.go)
}

func newTransportMetrics(reg prometheus.Registerer) (*transportMetrics, error) {
	m := &transportMetrics{
		connsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dialtone_sip_connections_open",
			Help: "SIP TCP/TLS connections open now, by transport.",
		}, []string{"transport"}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialtone_sip_connections_refused_total",
			Help: "SIP TCP/TLS connections closed at accept because a cap was reached, by cap (global, per_ip).",
		}, []string{"cap"}),
		acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialtone_sip_accept_errors_total",
			Help: "Temporary accept errors on SIP TCP/TLS listeners (e.g. out of file descriptors); accepting resumed after a back-off.",
		}),
		streamClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialtone_sip_connections_closed_total",
			Help: "SIP TCP/TLS connections closed by dialtone, by reason (first_request_timeout, idle_timeout, tls_handshake, too_large, unframable).",
		}, []string{"reason"}),
		udpSources: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dialtone_sip_udp_sources",
			Help: "UDP source addresses remembered by the SIP transport (bounded by the UDP source table size).",
		}),
		udpRotations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialtone_sip_udp_source_rotations_total",
			Help: "Times the UDP source table was full and its older half was forgotten.",
		}),
		frontDoor: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialtone_sip_frontdoor_total",
			Help: "Messages answered or dropped before reaching the SIP stack, by result (400, 501, 513: answered with that status; drop: unanswerable).",
		}, []string{"result"}),
		retransmissions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialtone_sip_retransmissions_total",
			Help: "Retransmitted REGISTER and OPTIONS requests over UDP answered from the last response (or absorbed while the first copy was handled).",
		}),
	}
	if err := registerAll(reg, m.connsOpen, m.connsRefused, m.acceptErrors, m.streamClosed, m.udpSources, m.udpRotations, m.frontDoor, m.retransmissions); err != nil {
		return nil, err
	}
	return m, nil
}
