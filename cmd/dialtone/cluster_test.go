package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest/etcdtest"
)

// The tests of several dialtone nodes on one etcd cluster (docs/design.md,
// "Several nodes (etcd)"): three etcd members embedded in the test process
// and two dialtone processes (a, b) on them, each with its own data
// directory (the same secret.key), its own ports and its own node id. The
// nodes are black boxes: SIP and HTTP over real sockets only.

const clusterBase = "/api/v1/accounts/default"

// etcdCluster is a three-member etcd cluster and the dialtone binary
// started on it.
type etcdCluster struct {
	t     *testing.T
	bin   string
	etcd  *etcdtest.Cluster
	store string // the --store value naming every member
	key   []byte // secret.key, the same on every node
}

// clusterNode is one dialtone process of the cluster.
type clusterNode struct {
	*process
	id string
}

// api returns the admin API helpers of the node for test t.
func (n *clusterNode) api(t *testing.T) *app { return &app{t: t, addrs: n.addrs} }

func newEtcdCluster(t *testing.T, bin string) *etcdCluster {
	t.Helper()
	ec, err := etcdtest.StartCluster(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ec.Close)
	var hosts []string
	for _, ep := range ec.Endpoints() {
		hosts = append(hosts, strings.TrimPrefix(ep, "http://"))
	}
	return &etcdCluster{t: t, bin: bin, etcd: ec, store: "etcd://" + strings.Join(hosts, ",")}
}

// startNode starts a dialtone node named id on the cluster. The first node
// writes secret.key; the others get a copy in their data directory before
// they start, as an operator copies it.
func (c *etcdCluster) startNode(id string, extra ...string) *clusterNode {
	t := c.t
	t.Helper()
	data := t.TempDir()
	if c.key != nil {
		if err := os.WriteFile(filepath.Join(data, store.KeyFile), c.key, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sipAddr := freeSIPAddr(t)
	args := []string{"--store", c.store, "--sip-addr", sipAddr, "--node-id", id, "--sip-advertise", sipAddr}
	p := startProcess(t, c.bin, data, append(args, extra...)...)
	t.Cleanup(p.kill)
	if c.key == nil {
		key, err := os.ReadFile(filepath.Join(data, store.KeyFile))
		if err != nil {
			t.Fatalf("node %s wrote no %s: %v", id, store.KeyFile, err)
		}
		c.key = key
	}
	return &clusterNode{process: p, id: id}
}

// freeSIPAddr returns 127.0.0.1:port with the port free for both UDP and
// TCP (the kernel's choice, released for dialtone to bind): a node must
// know its SIP address before it starts, to advertise it.
func freeSIPAddr(t *testing.T) string {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			u.Close()
			return addr
		}
	}
	t.Fatal("no port free for both UDP and TCP")
	return ""
}

// clusterUser is a user created through the admin API with its SIP password.
type clusterUser struct {
	id, ext, name, password string
}

func createUser(t *testing.T, a *app, ext, name string) clusterUser {
	t.Helper()
	code, u := a.api("POST", clusterBase+"/users", map[string]string{"extension": ext, "name": name})
	if code != 201 {
		t.Fatalf("POST /users %s = %d %v, want 201", ext, code, u)
	}
	id, _ := u["id"].(string)
	code, cred := a.api("GET", clusterBase+"/users/"+id+"/sip-credentials", nil)
	if code != 200 {
		t.Fatalf("GET sip-credentials = %d %v", code, cred)
	}
	return clusterUser{id: id, ext: ext, name: name, password: cred["password"].(string)}
}

// registrations returns the user's live registrations as a node lists them.
func registrations(t *testing.T, a *app, userID string) []map[string]any {
	t.Helper()
	code, m := a.api("GET", clusterBase+"/users/"+userID+"/registrations", nil)
	if code != 200 {
		t.Fatalf("GET registrations = %d %v", code, m)
	}
	var out []map[string]any
	list, _ := m["registrations"].([]any)
	for _, r := range list {
		out = append(out, r.(map[string]any))
	}
	return out
}

// TestCluster runs two dialtone nodes on three etcd members. One cluster
// and its two nodes serve the subtests that leave them running; the
// failure tests kill a node or a member and get their own.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three etcd members and two dialtone processes")
	}
	bin := buildBinary(t)
	// A short announcement (0.5 s, the shortest allowed) keeps the disabled-extension call short.
	ann := filepath.Join(t.TempDir(), "short.wav")
	if err := os.WriteFile(ann, wav8k(0.5), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("Shared", func(t *testing.T) {
		c := newEtcdCluster(t, bin)
		a := c.startNode("a", "--announcement", ann)
		b := c.startNode("b", "--announcement", ann)
		t.Run("SameAsOneNode", func(t *testing.T) { clusterSameAsOneNode(t, a, b) })
		t.Run("RegisterDeleteRace", func(t *testing.T) { clusterRegisterDeleteRace(t, a, b) })
		t.Run("CallAcrossNodes", func(t *testing.T) { clusterCallAcrossNodes(t, a, b) })
		t.Run("ChallengeAnsweredToOtherNode", func(t *testing.T) { clusterChallengeAcross(t, a, b) })
	})
	t.Run("EtcdMemberFailure", func(t *testing.T) { clusterEtcdMemberFailure(t, newEtcdCluster(t, bin)) })
	t.Run("NodeFailure", func(t *testing.T) { clusterNodeFailure(t, newEtcdCluster(t, bin)) })
}

// clusterSameAsOneNode walks TestEndToEnd's path with its steps spread
// over the two nodes: what one node wrote, the other serves at once.
func clusterSameAsOneNode(t *testing.T, na, nb *clusterNode) {
	a, b := na.api(t), nb.api(t)
	u := createUser(t, a, "3001", "Ada Lovelace")
	ph := newPhone(t, "UDP", na.addrs.SIPUDP, "example.test", u.ext, u.password)
	if res := ph.register("sip:3001@127.0.0.1:5098", 600, "SHA-256"); res.StatusCode != 200 {
		t.Fatalf("REGISTER through a = %d %s", res.StatusCode, res.Reason)
	}
	regs := registrations(t, b, u.id)
	if len(regs) != 1 || regs[0]["transport"] != "udp" || regs[0]["user_agent"] != "e2e-phone/1.0" || regs[0]["node"] != "a" {
		t.Fatalf("registrations through b = %v, want the one made through a (node a)", regs)
	}

	code, refused := b.api("DELETE", clusterBase+"/users/"+u.id, nil)
	if kinds := blockerKinds(t, refused); code != 409 || strings.Join(kinds, ",") != "enabled,registration" {
		t.Fatalf("DELETE through b while registered through a = %d %v, want 409 with enabled + the registration", code, refused)
	}

	// Disabled through b: a refuses the refresh and announces to callers.
	if code, m := b.api("POST", clusterBase+"/users/"+u.id+"/disable", nil); code != 200 {
		t.Fatalf("disable through b = %d %v", code, m)
	}
	if res := ph.register("sip:3001@127.0.0.1:5098", 600, "SHA-256"); res.StatusCode != 403 {
		t.Fatalf("REGISTER refresh through a of a user disabled through b = %d, want 403", res.StatusCode)
	}
	caller := createUser(t, b, "3002", "Grace Hopper")
	callAnnounced(t, newPhone(t, "UDP", na.addrs.SIPUDP, "example.test", caller.ext, caller.password), u.ext)

	// Signed out through a, deleted through b.
	if res := ph.register("sip:3001@127.0.0.1:5098", 0, "SHA-256"); res.StatusCode != 200 {
		t.Fatalf("unregister through a = %d, want 200", res.StatusCode)
	}
	if code, m := b.api("DELETE", clusterBase+"/users/"+u.id, nil); code != 204 {
		t.Fatalf("DELETE through b after sign-out = %d %v, want 204", code, m)
	}
	if code, _ := a.api("GET", clusterBase+"/users/"+u.id, nil); code != 404 {
		t.Fatalf("GET through a of the user deleted through b = %d, want 404", code)
	}

	clusterProvisioning(t, na, nb, caller)
	clusterOffboarding(t, na, nb)

	// The audit log is one: both nodes show the same entries.
	_, fromA := a.api("GET", clusterBase+"/audit?limit=1000", nil)
	_, fromB := b.api("GET", clusterBase+"/audit?limit=1000", nil)
	ea, _ := fromA["entries"].([]any)
	eb, _ := fromB["entries"].([]any)
	if len(ea) == 0 || fmt.Sprint(ea) != fmt.Sprint(eb) {
		t.Fatalf("audit through a (%d entries) and through b (%d) differ:\n%v\n%v", len(ea), len(eb), ea, eb)
	}
	for _, want := range []string{"Ada Lovelace", "user.delete", "offboard.delete"} {
		if !strings.Contains(fmt.Sprint(ea), want) {
			t.Errorf("audit lacks %q: %v", want, ea)
		}
	}
	if s := fmt.Sprint(ea); strings.Contains(s, u.password) || strings.Contains(s, caller.password) {
		t.Error("a SIP password is in the audit log")
	}
}

// callAnnounced calls ext, a disabled user, from caller: a 183 with an SDP
// answer, the announcement's RTP on the port it names, then 486.
func callAnnounced(t *testing.T, caller *phone, ext string) {
	t.Helper()
	rtpConn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rtpConn.Close()
	var progress *sip.Response
	sess, err := caller.invite(ext, sdpOffer(rtpConn.LocalAddr().(*net.UDPAddr).Port), func(r *sip.Response) error {
		if r.StatusCode == 183 && progress == nil {
			progress = r
		}
		return nil
	})
	var final *sipgo.ErrDialogResponse
	if !errors.As(err, &final) || final.Res.StatusCode != 486 {
		if sess != nil {
			sess.Close()
		}
		t.Fatalf("INVITE to the disabled extension %s = %v, want 486", ext, err)
	}
	if progress == nil {
		t.Fatal("no 183 before the 486")
	}
	var sd sdp.SessionDescription
	if ct := progress.GetHeader("Content-Type"); ct == nil || ct.Value() != "application/sdp" || sd.Unmarshal(progress.Body()) != nil ||
		len(sd.MediaDescriptions) != 1 {
		t.Fatalf("183 without an SDP answer of one stream:\n%s", progress)
	}
	port := sd.MediaDescriptions[0].MediaName.Port.Value

	// Every RTP packet sent before the 486 is queued on the socket before
	// a mark sent now (loopback delivers in order): read up to the mark.
	mark, err := net.DialUDP("udp4", nil, rtpConn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer mark.Close()
	if _, err := mark.Write([]byte("mark")); err != nil {
		t.Fatal(err)
	}
	_ = rtpConn.SetReadDeadline(time.Now().Add(20 * time.Second)) // bounds a failing test only
	packets := 0
	buf := make([]byte, 2048)
	for {
		n, src, err := rtpConn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("reading RTP: %v (after %d packets)", err, packets)
		}
		if string(buf[:n]) == "mark" {
			break
		}
		var p rtp.Packet
		if err := p.Unmarshal(buf[:n]); err != nil || p.PayloadType != 0 || src.Port != port {
			t.Fatalf("not G.711 RTP from the SDP's port %d: from %v, %v, payload type %d", port, src, err, p.PayloadType)
		}
		packets++
	}
	if packets < 10 { // 0.5 s at 50 packets/s
		t.Fatalf("%d RTP packets of the 0.5 s announcement before the 486, want 25", packets)
	}
}

// sdpOffer offers G.711 µ-law audio at port.
func sdpOffer(port int) []byte {
	return fmt.Appendf(nil, "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", port)
}

// invite sends an INVITE from the phone's user to ext through the phone's
// target (answering the 407) and waits for the final answer: nil for a
// 2xx (the session is then established), *sipgo.ErrDialogResponse for a
// final refusal. onResponse sees every response.
func (p *phone) invite(ext string, body []byte, onResponse func(*sip.Response) error) (*sipgo.DialogClientSession, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: p.user, Host: "127.0.0.1", Port: 5999}}
	dc := sipgo.NewDialogClientCache(p.cli, contact)
	ruri := sip.Uri{Scheme: "sip", User: ext, Host: p.domain}
	req := sip.NewRequest(sip.INVITE, ruri)
	from := sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: p.user, Host: p.domain}}
	from.Params.Add("tag", sip.GenerateTagN(10))
	req.AppendHeader(&from)
	req.AppendHeader(&sip.ToHeader{Address: ruri})
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody(body)
	req.SetTransport(p.transport)
	req.SetDestination(p.target)
	sess, err := dc.WriteInvite(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("INVITE %s: %w", ext, err)
	}
	return sess, sess.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: onResponse, Username: p.user, Password: p.password})
}

// clusterProvisioning: a device added through a is served its file
// through b, and the line in it registers through b.
func clusterProvisioning(t *testing.T, na, nb *clusterNode, u clusterUser) {
	a, b := na.api(t), nb.api(t)
	code, prov := a.api("GET", clusterBase+"/provisioning", nil)
	provURL, _ := prov["url"].(string)
	i := strings.Index(provURL, "/p/")
	if code != 200 || i < 0 {
		t.Fatalf("GET /provisioning through a = %d %v", code, prov)
	}
	sp := &sitePhone{mac: "805ec0c1a501", ext: u.ext}
	if code, d := a.api("POST", clusterBase+"/devices", map[string]any{"mac": sp.mac, "model": "T54W",
		"lines": []map[string]any{{"line": 1, "user_id": u.id}}}); code != 201 {
		t.Fatalf("POST /devices through a = %d %v", code, d)
	}
	code, cred := a.api("GET", clusterBase+"/devices/"+sp.mac+"/provisioning-credentials", nil)
	if code != 200 {
		t.Fatalf("GET provisioning-credentials through a = %d %v", code, cred)
	}
	if code, d := b.api("GET", clusterBase+"/devices/"+sp.mac, nil); code != 200 || d["model"] != "T54W" {
		t.Fatalf("GET through b of the device added through a = %d %v", code, d)
	}
	sp.user, _ = cred["username"].(string)
	sp.pass, _ = cred["password"].(string)
	model, _ := store.LookupModel("T54W")
	if r := sp.powerUp(nb.addrs, provURL[i:], model.CommonFile()); r.err != nil || r.common != 200 || r.file != 200 || r.register != 200 {
		t.Fatalf("through b: common file %d, device file %d, REGISTER with the file's line %d: %v", r.common, r.file, r.register, r.err)
	}
	if regs := registrations(t, a, u.id); len(regs) != 1 {
		t.Fatalf("registrations through a after the REGISTER through b = %v, want 1", regs)
	}
}

// clusterOffboarding: a user registered through a is offboarded through b
// (a background job on b: disable, sign out, delete), and is gone on a.
func clusterOffboarding(t *testing.T, na, nb *clusterNode) {
	a, b := na.api(t), nb.api(t)
	u := createUser(t, a, "3003", "Margaret Hamilton")
	ph := newPhone(t, "TCP", na.addrs.SIPTCP, "example.test", u.ext, u.password)
	if res := ph.register("sip:3003@127.0.0.1:5097;transport=tcp", 600, "MD5"); res.StatusCode != 200 {
		t.Fatalf("REGISTER through a = %d", res.StatusCode)
	}
	code, job := b.api("POST", clusterBase+"/users/"+u.id+"/offboard", map[string]any{"release_licence": true})
	if code != 202 {
		t.Fatalf("offboard through b = %d %v, want 202", code, job)
	}
	jobID, _ := job["job_id"].(string)
	deadline := time.Now().Add(20 * time.Second) // bounds a failing test only
	for {
		code, j := b.api("GET", clusterBase+"/jobs/"+jobID, nil)
		if code == 200 && j["state"] == "done" {
			break
		}
		if code != 200 || j["state"] == "failed" || time.Now().After(deadline) {
			t.Fatalf("offboarding job through b = %d %v, want done", code, j)
		}
		waitBriefly()
	}
	if code, _ := a.api("GET", clusterBase+"/users/"+u.id, nil); code != 404 {
		t.Fatalf("GET through a of the user offboarded through b = %d, want 404", code)
	}
	if res := ph.register("sip:3003@127.0.0.1:5097;transport=tcp", 600, "MD5"); res.StatusCode < 400 {
		t.Fatalf("REGISTER through a of the offboarded user = %d, want a refusal", res.StatusCode)
	}
}

// waitBriefly yields between polls of a state another process changes.
func waitBriefly() { time.Sleep(20 * time.Millisecond) }

// clusterRegisterDeleteRace races, for a fresh user per round, a REGISTER
// through one node against DISABLE + DELETE through the other (alternating
// which node does which), many rounds at once. Exactly one side wins each
// round, and afterwards neither node shows a deleted user with a live
// registration. The REGISTER's challenge is fetched before the race, so
// the racing REGISTER is the one carrying credentials.
func clusterRegisterDeleteRace(t *testing.T, na, nb *clusterNode) {
	// Three rounds at a time: concurrent admin writes of one account
	// conflict (they read the account's users) and run again with a
	// backoff (docs/design.md, "Several nodes"), so more workers gain
	// nothing on two cores. Within a round, the REGISTER and the DISABLE +
	// DELETE race.
	const rounds, workers = 200, 3
	// Each round's phone sends burst REGISTERs one after the other while
	// the DISABLE and the DELETE run: one of them is likely to read the
	// user before the DISABLE commits and to commit after the DELETE read
	// the bindings, the interleaving etcd's compares must refuse.
	const burst = 3
	apiA, apiB := plAPI(na.addrs.Admin), plAPI(nb.addrs.Admin)
	// One SIP user agent per node for every round's phone.
	uas := map[*clusterNode]*phone{na: newPhone(t, "UDP", na.addrs.SIPUDP, "example.test", "", ""),
		nb: newPhone(t, "UDP", nb.addrs.SIPUDP, "example.test", "", "")}
	var registered, deleted atomic.Int64
	var mu sync.Mutex
	outcome := map[string]bool{} // user id → kept (the REGISTER won)
	ctx := context.Background()
	parallel(t, rounds, workers, func(round int) error {
		regNode, delAPI := na, apiB
		if round%2 == 1 {
			regNode, delAPI = nb, apiA
		}
		ext := fmt.Sprint(6000 + round)
		code, u, err := apiA(ctx, "POST", clusterBase+"/users", map[string]string{"extension": ext, "name": "Racer " + ext})
		if err != nil || code != 201 {
			return fmt.Errorf("create user: %d %v %v", code, u, err)
		}
		id, _ := u["id"].(string)
		code, cred, err := apiB(ctx, "GET", clusterBase+"/users/"+id+"/sip-credentials", nil)
		if err != nil || code != 200 {
			return fmt.Errorf("sip-credentials: %d %v", code, err)
		}
		ua := uas[regNode]
		ph := &phone{t: t, cli: ua.cli, ua: ua.ua, transport: "UDP", target: ua.target, domain: ua.domain, user: ext,
			password: cred["password"].(string), userAgent: ua.userAgent, callID: sip.GenerateTagN(16)}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		// The phone's REGISTERs, each with its own contact (a write each),
		// challenged before the race: the racing ones carry credentials.
		contacts, authz := make([]string, burst), make([]string, burst)
		for i := range burst {
			contacts[i] = fmt.Sprintf("sip:%s@127.0.0.1:%d", ext, 5070+i)
			chal, err := ph.send(sctx, contacts[i], 600, "")
			if err != nil || chal.StatusCode != 401 {
				return fmt.Errorf("REGISTER without credentials: %v %v", chal, err)
			}
			if authz[i], err = ph.answer(chal, "MD5"); err != nil {
				return err
			}
		}

		var wg sync.WaitGroup
		regCodes := make([]int, burst)
		var disCode, delCode int
		var regErr, delErr error
		// In half the rounds the DISABLE waits for the first REGISTER's
		// answer (so some rounds surely keep the user; the later REGISTERs
		// still race the DISABLE); in the others all start at once.
		headStart := round%4 < 2
		begin, first := make(chan struct{}), make(chan struct{})
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-begin
			for i := range burst {
				res, err := ph.send(sctx, contacts[i], 600, authz[i])
				if i == 0 {
					close(first)
				}
				if err != nil {
					regErr = err
					return
				}
				regCodes[i] = res.StatusCode
			}
		}()
		go func() {
			defer wg.Done()
			<-begin
			if headStart {
				<-first
			}
			if disCode, _, delErr = delAPI(ctx, "POST", clusterBase+"/users/"+id+"/disable", nil); delErr != nil || disCode != 200 {
				return
			}
			delCode, _, delErr = delAPI(ctx, "DELETE", clusterBase+"/users/"+id, nil)
		}()
		close(begin)
		wg.Wait()
		if regErr != nil || delErr != nil || disCode != 200 {
			return fmt.Errorf("REGISTERs %v %v; disable %d, DELETE %d %v", regCodes, regErr, disCode, delCode, delErr)
		}
		// A REGISTER answered 200 committed while the user was enabled,
		// before the DISABLE: the DELETE must have found its binding.
		kept := slices.Contains(regCodes, 200)
		for _, c := range regCodes {
			if c != 200 && c < 400 {
				return fmt.Errorf("REGISTERs %v: want 200 or a refusal", regCodes)
			}
		}
		switch {
		case kept && delCode == 409:
			registered.Add(1)
		case !kept && delCode == 204:
			deleted.Add(1)
		default:
			return fmt.Errorf("REGISTERs %v, DELETE %d: want the DELETE refused exactly when a REGISTER won", regCodes, delCode)
		}
		// Both nodes, after both answered, agree on the outcome.
		for _, api := range []plAPIFunc{apiA, apiB} {
			code, _, err := api(ctx, "GET", clusterBase+"/users/"+id, nil)
			if err != nil || code != map[bool]int{true: 200, false: 404}[kept] {
				return fmt.Errorf("user %s: GET %d %v after REGISTERs %v, DELETE %d", ext, code, err, regCodes, delCode)
			}
		}
		mu.Lock()
		outcome[id] = kept
		mu.Unlock()
		return nil
	})
	t.Logf("%d rounds: REGISTER won %d, DELETE won %d", rounds, registered.Load(), deleted.Load())
	// Every round's user through both nodes: a deleted one has no live
	// registration, a kept one its REGISTERs'. (A round's bindings last
	// 600 s and nothing else touches its user: what holds now held when
	// the round ended.)
	for _, n := range []*clusterNode{na, nb} {
		live := map[string]int{}
		code, regs := n.api(t).api("GET", clusterBase+"/registrations", nil)
		list, _ := regs["registrations"].([]any)
		if code != 200 {
			t.Fatalf("GET /registrations through %s = %d %v", n.id, code, regs)
		}
		for _, r := range list {
			live[fmt.Sprint(r.(map[string]any)["user_id"])]++
		}
		for id, kept := range outcome {
			if !kept && live[id] > 0 || kept && live[id] == 0 {
				t.Errorf("through %s: user %s kept %v with %d live registration(s)", n.id, id, kept, live[id])
			}
		}
	}
	if deleted.Load() == 0 {
		t.Errorf("no DELETE won (REGISTER won %d rounds): the race was not run", registered.Load())
	}
}

// clusterCallAcrossNodes: a phone registered over TCP through b (its
// Contact unreachable: only b's flow reaches it) is called through a.
// clusterChallengeAcross: a phone behind DNS SRV or a load balancer may
// send its answer to a challenge to another node than the one that sent
// it. Node a's 401 answered to node b registers (the nodes' digest nonces
// share a key derived from secret.key).
func clusterChallengeAcross(t *testing.T, na, nb *clusterNode) {
	u := createUser(t, na.api(t), "3201", "Moves between challenge and answer")
	pa := newPhone(t, "UDP", na.addrs.SIPUDP, "example.test", u.ext, u.password)
	pb := newPhone(t, "UDP", nb.addrs.SIPUDP, "example.test", u.ext, u.password)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	chal, err := pa.send(ctx, "sip:3201@127.0.0.1:5099", 600, "")
	if err != nil || chal.StatusCode != 401 {
		t.Fatalf("REGISTER through a = %v, %v; want its 401", chal, err)
	}
	authz, err := pa.answer(chal, "MD5")
	if err != nil {
		t.Fatal(err)
	}
	res, err := pb.send(ctx, "sip:3201@127.0.0.1:5099", 600, authz)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("a's challenge answered to b = %v, %v; want 200", res, err)
	}
}

func clusterCallAcrossNodes(t *testing.T, na, nb *clusterNode) {
	a := na.api(t)
	callee := createUser(t, a, "3101", "Callee")
	caller := createUser(t, a, "3102", "Caller")
	ph := newPhone(t, "TCP", nb.addrs.SIPTCP, "example.test", callee.ext, callee.password)
	quiet := slog.New(slog.DiscardHandler)
	srv, err := sipgo.NewServer(ph.ua, sipgo.WithServerLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	invites := make(chan *sip.Request, 4)
	acked, byed := make(chan struct{}, 1), make(chan struct{}, 1)
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		invites <- req
		res := sip.NewResponseFromRequest(req, 200, "OK", []byte("v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n"))
		res.To().Params.Add("tag", sip.GenerateTagN(10))
		res.AppendHeader(sip.NewHeader("Contact", "<sip:3101@127.0.0.1:9;transport=tcp>"))
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		_ = tx.Respond(res)
	})
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) { acked <- struct{}{} })
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		byed <- struct{}{}
	})
	if res := ph.register("sip:3101@127.0.0.1:9;transport=tcp", 600, "MD5"); res.StatusCode != 200 {
		t.Fatalf("REGISTER over TCP through b = %d", res.StatusCode)
	}

	cp := newPhone(t, "UDP", na.addrs.SIPUDP, "example.test", caller.ext, caller.password)
	sess, err := cp.invite(callee.ext, sdpOffer(4002), nil)
	if err != nil {
		t.Fatalf("INVITE through a to a phone on b: %v, want 200", err)
	}
	defer sess.Close()
	select {
	case req := <-invites:
		if req.Recipient.User != callee.ext {
			t.Errorf("the phone got an INVITE for %s, want its Contact", req.Recipient.String())
		}
	default:
		t.Fatal("answered, but the phone saw no INVITE")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := sess.Ack(ctx); err != nil {
		t.Fatalf("ACK: %v", err)
	}
	select {
	case <-acked:
	case <-ctx.Done():
		t.Fatal("the ACK did not reach the phone")
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatalf("BYE: %v", err)
	}
	select {
	case <-byed:
	case <-ctx.Done():
		t.Fatal("the BYE did not reach the phone")
	}
}

// clusterEtcdMemberFailure: with one etcd member of three killed (the
// leader, the hardest one to lose), REGISTER through both nodes and the
// admin writes of a user's life through both nodes still succeed; with a
// second one killed, both nodes refuse writes with 503 and Retry-After.
func clusterEtcdMemberFailure(t *testing.T, c *etcdCluster) {
	na, nb := c.startNode("a"), c.startNode("b")
	a, b := na.api(t), nb.api(t)
	before := createUser(t, a, "4001", "Before")
	leader := c.etcd.Leader()
	if leader < 0 {
		t.Fatal("no etcd leader")
	}
	began := time.Now()
	c.etcd.Kill(leader)
	// Writes wait for the survivors' election (etcd's election timeout).
	if l, err := c.etcd.WaitLeader(20 * time.Second); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("etcd member m%d (the leader) killed; m%d leads %v later", leader, l, time.Since(began))
	}

	for i, n := range []*clusterNode{na, nb} {
		other := []*clusterNode{nb, na}[i]
		api, otherAPI := n.api(t), other.api(t)
		u := createUser(t, api, fmt.Sprint(4010+i), "After "+n.id)
		ph := newPhone(t, "UDP", n.addrs.SIPUDP, "example.test", u.ext, u.password)
		contact := fmt.Sprintf("sip:%s@127.0.0.1:5060", u.ext)
		if res := ph.register(contact, 600, "MD5"); res.StatusCode != 200 {
			t.Fatalf("REGISTER through %s with a member down = %d", n.id, res.StatusCode)
		}
		if regs := registrations(t, otherAPI, u.id); len(regs) != 1 {
			t.Fatalf("registrations through %s = %v, want 1", other.id, regs)
		}
		if code, m := otherAPI.api("POST", clusterBase+"/users/"+u.id+"/disable", nil); code != 200 {
			t.Fatalf("disable through %s = %d %v", other.id, code, m)
		}
		if res := ph.register(contact, 0, "MD5"); res.StatusCode != 200 {
			t.Fatalf("unregister through %s = %d", n.id, res.StatusCode)
		}
		if code, m := otherAPI.api("DELETE", clusterBase+"/users/"+u.id, nil); code != 204 {
			t.Fatalf("DELETE through %s = %d %v", other.id, code, m)
		}
	}
	// What was written before the member died is still there.
	phb := newPhone(t, "UDP", nb.addrs.SIPUDP, "example.test", before.ext, before.password)
	if res := phb.register("sip:4001@127.0.0.1:5060", 600, "MD5"); res.StatusCode != 200 {
		t.Fatalf("REGISTER through b of a user created before the kill = %d", res.StatusCode)
	}
	if code, _ := b.api("GET", clusterBase+"/users/"+before.id, nil); code != 200 {
		t.Fatalf("GET through b of a user created before the kill = %d", code)
	}

	// A second member killed: no quorum, nothing can be written. Both
	// nodes say so (503 with Retry-After: the phone keeps its binding and
	// retries) once etcd does not answer, rather than hang or accept what
	// they cannot store. The phone registered through a before, so a
	// knows its credentials and the REGISTER of a new contact reaches the
	// write.
	pha := newPhone(t, "UDP", na.addrs.SIPUDP, "example.test", before.ext, before.password)
	if res := pha.register("sip:4001@127.0.0.1:5062", 600, "MD5"); res.StatusCode != 200 {
		t.Fatalf("REGISTER through a of a user created before the kill = %d", res.StatusCode)
	}
	// A user b has never seen: without a quorum b cannot even look up
	// its credentials, and says so the same way.
	unseen := createUser(t, a, "4002", "Never through b")
	c.etcd.Kill((leader + 1) % 3)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		phb := newPhone(t, "UDP", nb.addrs.SIPUDP, "example.test", unseen.ext, unseen.password)
		res, err := phb.tryRegister(ctx, "sip:4002@127.0.0.1:5063", 600, "MD5")
		if err != nil || res.StatusCode != 503 || res.GetHeader("Retry-After") == nil {
			t.Errorf("REGISTER through b of a user it never saw, without an etcd quorum = %v %v, want 503 with Retry-After; b logged:\n%s", res, err, lastLines(nb.logs.String(), 5))
		}
	}()
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := pha.tryRegister(ctx, "sip:4001@127.0.0.1:5061", 600, "MD5") // a new contact: a write
		if err != nil || res.StatusCode != 503 || res.GetHeader("Retry-After") == nil {
			t.Errorf("REGISTER through a without an etcd quorum = %v %v, want 503 with Retry-After; a logged:\n%s", res, err, lastLines(na.logs.String(), 5))
		}
	}()
	req, _ := http.NewRequest("POST", "http://"+nb.addrs.Admin+clusterBase+"/users", strings.NewReader(`{"extension":"4020","name":"No quorum"}`))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 503 || res.Header.Get("Retry-After") == "" {
		t.Errorf("POST /users through b without an etcd quorum = %d (Retry-After %q), want 503 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"))
	}
	wg.Wait()
}

// clusterNodeFailure: node a is killed (SIGKILL) while it holds two
// phones' registrations. One phone registers again through b (what a phone
// does behind DNS SRV or a load balancer once its registrar stops
// answering); the other never comes back. Its binding, a's, still blocks
// the user's deletion at first, then vanishes with a's lease, within
// --etcd-lease-ttl, after which the DELETE through b succeeds.
func clusterNodeFailure(t *testing.T, c *etcdCluster) {
	const ttl = 3 * time.Second
	na := c.startNode("a", "--etcd-lease-ttl", ttl.String())
	nb := c.startNode("b", "--etcd-lease-ttl", ttl.String())
	a, b := na.api(t), nb.api(t)
	moving := createUser(t, a, "5001", "Moves to b")
	gone := createUser(t, a, "5002", "Never back")
	pm := newPhone(t, "UDP", na.addrs.SIPUDP, "example.test", moving.ext, moving.password)
	pg := newPhone(t, "TCP", na.addrs.SIPTCP, "example.test", gone.ext, gone.password)
	if res := pm.register("sip:5001@127.0.0.1:5080", 3600, "MD5"); res.StatusCode != 200 {
		t.Fatalf("REGISTER through a = %d", res.StatusCode)
	}
	if res := pg.register("sip:5002@127.0.0.1:5081;transport=tcp", 3600, "MD5"); res.StatusCode != 200 {
		t.Fatalf("REGISTER through a = %d", res.StatusCode)
	}
	if code, m := b.api("POST", clusterBase+"/users/"+gone.id+"/disable", nil); code != 200 {
		t.Fatalf("disable through b = %d %v", code, m)
	}
	if regs := registrations(t, a, gone.id); len(regs) != 1 {
		t.Fatalf("registrations through a = %v, want 1", regs)
	}

	na.kill()
	killed := time.Now()

	// The phone's registrar stopped answering: it registers through b.
	pm.target = nb.addrs.SIPUDP
	if res := pm.register("sip:5001@127.0.0.1:5080", 3600, "MD5"); res.StatusCode != 200 {
		t.Fatalf("REGISTER through b after a died = %d", res.StatusCode)
	}

	// a's binding blocks the deletion until its lease ends…
	code, refused := b.api("DELETE", clusterBase+"/users/"+gone.id, nil)
	if kinds := blockerKinds(t, refused); (code != 409 || !slices.Contains(kinds, "registration")) && time.Since(killed) < ttl {
		t.Fatalf("DELETE through b right after a died = %d %v, want 409 naming a's registration", code, refused)
	}
	// …which is within the TTL of a's last keepalive, so within the TTL of
	// its death, plus at most a second for etcd to see the lease expired
	// (its leader checks every 500 ms) and commit the revoke. Measured:
	// 2.4-2.8 s.
	deadline := killed.Add(ttl + time.Second)
	for len(registrations(t, b, gone.id)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a's binding still listed through b %v after a was killed (--etcd-lease-ttl %v)", time.Since(killed), ttl)
		}
		waitBriefly()
	}
	t.Logf("a's binding vanished %v after a was killed (--etcd-lease-ttl %v)", time.Since(killed), ttl)
	if code, m := b.api("DELETE", clusterBase+"/users/"+gone.id, nil); code != 204 {
		t.Fatalf("DELETE through b once a's lease ended = %d %v, want 204", code, m)
	}
	// The phone that moved is b's now and stays.
	if regs := registrations(t, b, moving.id); len(regs) != 1 {
		t.Fatalf("registrations of the phone that moved to b = %v, want 1", regs)
	}
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
