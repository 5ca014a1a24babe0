package sip

import (
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests      *prometheus.CounterVec // by method
	registers     *prometheus.CounterVec // REGISTER outcomes by status code
	authFailures  *prometheus.CounterVec // by reason
	inFlight      prometheus.Gauge
	overloaded    prometheus.Counter
	handlerPanics prometheus.Counter
	blocks        prometheus.Counter
	blockedDrops  prometheus.Counter
	hops          *prometheus.CounterVec // requests from other nodes (hop.go), by result
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialtone_sip_requests_total",
			Help: "SIP requests received, by method (unknown methods count as OTHER).",
		}, []string{"method"}),
		registers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialtone_sip_register_responses_total",
			Help: "Final responses to REGISTER, by status code (401 challenges included).",
		}, []string{"code"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialtone_sip_auth_failures_total",
			Help: "Digest authentication failures, by reason (unknown_user, bad_password, stale, replay, bad_nonce, bad_realm, malformed, wrong_user).",
		}, []string{"reason"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dialtone_sip_in_flight_requests",
			Help: "SIP requests being handled right now.",
		}),
		overloaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialtone_sip_overload_rejections_total",
			Help: "Requests answered 503 because MaxInFlight requests were already being handled.",
		}),
		handlerPanics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialtone_sip_handler_panics_total",
			Help: "Panics recovered in SIP request handlers (each one is a bug).",
		}),
		blocks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialtone_sip_blocks_total",
			Help: "Sources (or users from one source) blocked after repeated authentication failures.",
		}),
		blockedDrops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialtone_sip_blocked_requests_total",
			Help: "Requests refused because their source (or user from that source) is blocked.",
		}),
		hops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialtone_sip_hops_total",
			Help: "Requests carrying X-Dialtone-Hop (another node passing a call or check-sync for a phone whose flow is here), by result: accepted, or refused (the header did not verify; the request was handled as an outside one).",
		}, []string{"result"}),
	}
	if err := registerAll(reg, m.requests, m.registers, m.authFailures, m.inFlight, m.overloaded, m.handlerPanics, m.blocks, m.blockedDrops, m.hops); err != nil {
		return nil, err
	}
	return m, nil
}

// methodLabel bounds the label set: sipgo accepts any method token.
func methodLabel(m sip.RequestMethod) string {
	switch m {
	case sip.INVITE, sip.ACK, sip.CANCEL, sip.BYE, sip.REGISTER, sip.OPTIONS, sip.SUBSCRIBE, sip.NOTIFY,
		sip.REFER, sip.INFO, sip.MESSAGE, sip.PRACK, sip.UPDATE, sip.PUBLISH:
		return string(m)
	}
	return "OTHER"
}

// registerAll registers cs on reg (nil: registers nothing).
func registerAll(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
