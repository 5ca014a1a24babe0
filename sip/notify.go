package sip

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo/sip"
)

// ErrNoRegistration is wrapped by CheckSync when the device has no live
// registration to send the NOTIFY to (or, over TCP/TLS, its connection is
// gone).
var ErrNoRegistration = errors.New("sip: device has no live registration")

// checkSyncTimeout bounds a CheckSync whose context has no deadline.
const checkSyncTimeout = 10 * time.Second

// fetchPoll is how often WaitForFetch looks at the device.
const fetchPoll = 200 * time.Millisecond

// Notifier sends check-sync NOTIFYs to Yealink phones over the flows they
// registered on, and waits for the fetch that follows. It is admin's
// Notifier and FetchWaiter; it takes no method of its own on the endpoint
// (the answers to its NOTIFYs come back through sipgo's client
// transactions).
type Notifier struct {
	core *Server
	m    *notifierMetrics
}

// NewNotifier builds the notifier on the endpoint s, registering its
// metric on the endpoint's registerer.
func NewNotifier(s *Server) (*Notifier, error) {
	m, err := newNotifierMetrics(s.reg)
	if err != nil {
		return nil, fmt.Errorf("sip: notifier metrics: %w", err)
	}
	n := &Notifier{core: s, m: m}
	if err := s.routeHop(sip.NOTIFY, n.onHop); err != nil {
		return nil, err
	}
	return n, nil
}

// CheckSync asks a Yealink phone to fetch its configuration again: NOTIFY
// with "Event: check-sync;reboot=false" (docs/provisioning.md, "What Yealink handsets do") to each of
// the device's own registrations (store.DeviceBindings: its MAC in the
// User-Agent or +sip.instance), one per flow, sent over the flow it
// registered on (NAT). A TCP/TLS registration whose connection is gone is
// skipped rather than dialled. It returns nil when at least one NOTIFY got
// a 2xx within ctx (10 s when ctx has no deadline); otherwise an error
// wrapping ErrNoRegistration (nothing to send to), store.ErrNotFound
// (unknown device), or saying what the phone answered. It is admin's
// Notifier.
func (n *Notifier) CheckSync(ctx context.Context, accountID, mac string) error {
	s, m := n.core, n.m
	bs, err := s.db.DeviceBindings(accountID, mac)
	if err != nil {
		m.checkSyncs.WithLabelValues(checkSyncError).Inc()
		return fmt.Errorf("check-sync %s: %w", mac, err)
	}
	if len(bs) == 0 {
		m.checkSyncs.WithLabelValues(checkSyncNoRegistration).Inc()
		return fmt.Errorf("check-sync %s: %w", mac, ErrNoRegistration)
	}
	acct, err := s.db.Account(accountID)
	if err != nil {
		m.checkSyncs.WithLabelValues(checkSyncError).Inc()
		return fmt.Errorf("check-sync %s: %w", mac, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, checkSyncTimeout)
		defer cancel()
	}
	// One NOTIFY per flow: two lines of one phone share it. A flow held by
	// another node is reached through that node (hop.go); one held by a
	// node that is gone is skipped.
	seen := map[string]bool{}
	var targets []target
	for _, b := range bs {
		k := b.Node + "/" + strings.ToLower(b.Transport) + "/" + b.Source
		if seen[k] {
			continue
		}
		seen[k] = true
		t := target{b: b}
		if s.remote(b) {
			nd, ok := s.peer(b.Node)
			if !ok {
				continue
			}
			t.node = &nd
		}
		targets = append(targets, t)
	}
	if len(targets) == 0 {
		m.checkSyncs.WithLabelValues(checkSyncNoRegistration).Inc()
		return fmt.Errorf("check-sync %s: %w (its node is gone)", mac, ErrNoRegistration)
	}
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		errs[i] = errors.New("check-sync panicked")
		go s.safely("check-sync", func() {
			defer wg.Done()
			errs[i] = n.notifyCheckSync(ctx, acct, t.b, t.node)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("check-sync %s: %w", mac, errors.Join(errs...))
}

// rejectedError is a final response other than 2xx to a NOTIFY.
type rejectedError struct {
	code   int
	reason string
}

func (e rejectedError) Error() string { return fmt.Sprintf("%d %s", e.code, e.reason) }

// notifyCheckSync sends one check-sync NOTIFY to binding b and waits for
// the final response: over b's flow, or, when node is set, to that node
// (which holds the flow) with our X-Dialtone-Hop (hop.go); it sends it on.
func (n *Notifier) notifyCheckSync(ctx context.Context, acct store.Account, b store.Binding, node *store.NodeInfo) error {
	s, m := n.core, n.m
	result := checkSyncError
	defer func() { m.checkSyncs.WithLabelValues(result).Inc() }()

	var contact sip.Uri
	if err := sip.ParseUri(b.Contact, &contact); err != nil {
		return fmt.Errorf("contact %q: %w", b.Contact, err)
	}
	tr := strings.ToUpper(b.Transport)
	if tr == "" {
		tr = "UDP"
	}
	dest := b.Source
	if node != nil {
		tr, dest = hopTransport, node.SIPAddr
	} else if sip.IsReliable(tr) {
		// sipgo would dial a new connection, which does not reach a phone
		// behind NAT (RFC 5626 §3: only the flow the phone opened reaches it);
		// the phone re-registers anyway.
		conn, err := s.ua.TransportLayer().GetConnection(tr, b.Source)
		if err != nil {
			result = checkSyncNoFlow
			return fmt.Errorf("%s %s: %w (connection closed)", tr, b.Source, ErrNoRegistration)
		}
		_, _ = conn.TryClose()
	}
	ext := ""
	if u, err := s.db.User(acct.ID, b.UserID); err == nil {
		ext = u.Extension
	} else {
		ext = contact.User
	}
	nt := sip.NewRequest(sip.NOTIFY, contact)
	s.addVia(nt, "", tr, dest)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "dialtone", Host: acct.SIPDomain}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(16))
	nt.AppendHeader(from)
	nt.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: ext, Host: acct.SIPDomain}, Params: sip.NewParams()})
	cid := sip.CallIDHeader(sip.GenerateTagN(24) + "@dialtone")
	nt.AppendHeader(&cid)
	nt.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.NOTIFY})
	mf := sip.MaxForwardsHeader(70)
	nt.AppendHeader(&mf)
	nt.AppendHeader(&sip.ContactHeader{Address: s.ourURI(dest, tr, false)})
	nt.AppendHeader(sip.NewHeader("Event", "check-sync;reboot=false"))
	nt.AppendHeader(sip.NewHeader("Subscription-State", "terminated"))
	nt.AppendHeader(sip.NewHeader("User-Agent", s.cfg.ServerName))
	nt.SetBody(nil)
	s.setFlow(nt, tr, dest)
	via := ""
	if node != nil {
		if err := s.signHop(nt, b); err != nil {
			return fmt.Errorf("NOTIFY through node %s: %w", node.ID, err)
		}
		via = " through node " + node.ID
	}

	res, err := s.cli.Do(ctx, nt, noBuild)
	if err != nil {
		return fmt.Errorf("NOTIFY to %s over %s%s: %w", dest, tr, via, err)
	}
	if !res.IsSuccess() {
		result = checkSyncRejected
		if node != nil && res.StatusCode == 480 {
			result = checkSyncNoFlow // the node found the phone's connection gone
			return fmt.Errorf("NOTIFY to %s over %s%s: %w (%w)", b.Source, tr, via, ErrNoRegistration, rejectedError{res.StatusCode, res.Reason})
		}
		return fmt.Errorf("NOTIFY to %s over %s%s: %w", b.Source, tr, via, rejectedError{res.StatusCode, res.Reason})
	}
	result = checkSyncOK
	s.log.Info("check-sync sent", "account", acct.ID, "mac", b.MAC, "source", b.Source, "transport", tr, "node", b.Node)
	return nil
}

// hopCheckSyncTimeout bounds the NOTIFY we send for another node: shorter
// than that node's own wait (checkSyncTimeout), so it hears our answer.
const hopCheckSyncTimeout = checkSyncTimeout - 2*time.Second

// onHop sends the check-sync NOTIFY another node asked us to send to one
// of our bindings (hop.go) over the binding's flow, and answers that node:
// 200 when the phone took it, 480 when its flow is gone, the phone's own
// refusal, or 408 when it did not answer.
func (n *Notifier) onHop(req *sip.Request, tx sip.ServerTransaction, h hopped) {
	acct, err := n.core.db.Account(h.binding.AccountID)
	if err != nil {
		n.core.reply(req, tx, 404, "Not Found")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), hopCheckSyncTimeout)
	defer cancel()
	err = n.notifyCheckSync(ctx, acct, h.binding, nil)
	var rej rejectedError
	switch {
	case err == nil:
		n.core.reply(req, tx, 200, "OK")
	case errors.Is(err, ErrNoRegistration):
		n.core.reply(req, tx, 480, "Temporarily Unavailable")
	case errors.As(err, &rej) && rej.code >= 300 && rej.code < 700:
		n.core.reply(req, tx, rej.code, rej.reason)
	default:
		n.core.reply(req, tx, 408, "Request Timeout")
	}
}

// WaitForFetch waits until the device has fetched its configuration at or
// after since (store.Device's LastProvisionedAt, by the store's clock: take
// since from the store's Now before CheckSync), polling every 200 ms. It
// returns nil once it has, ctx's error when ctx ends first, or the store's
// error (store.ErrNotFound for an unknown device).
func (n *Notifier) WaitForFetch(ctx context.Context, accountID, mac string, since time.Time) error {
	t := time.NewTicker(fetchPoll)
	defer t.Stop()
	for {
		d, err := n.core.db.Device(accountID, mac)
		if err != nil {
			return fmt.Errorf("wait for fetch %s: %w", mac, err)
		}
		if !d.LastProvisionedAt.IsZero() && !d.LastProvisionedAt.Before(since) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for fetch %s: no fetch since %s: %w", mac, since.UTC().Format(time.RFC3339), ctx.Err())
		case <-t.C:
		}
	}
}
