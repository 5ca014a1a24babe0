package sip

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// BenchmarkRegister measures a full digest registration (REGISTER → 401 →
// REGISTER → 200, the binding on disk) from many concurrent phones, over
// UDP and TCP on loopback, through sipgo's transaction layer
// (DisableFastPath) and through the fast path. Report: registrations/s and
// CPU per registration (server and sipgo's client: see BenchmarkRegisterUDP
// for a cheap client).
func BenchmarkRegister(b *testing.B) {
	for _, bc := range []struct {
		transport string
		disable   bool
	}{{"UDP", true}, {"UDP", false}, {"TCP", true}, {"TCP", false}} {
		transport := bc.transport
		name := transport + "/fastpath"
		if bc.disable {
			name = transport + "/sipgo"
		}
		b.Run(name, func(b *testing.B) {
			e := newEnv(b, Config{DisableFastPath: bc.disable})
			exts, pws := benchUsers(e)
			users := len(exts)
			var next atomic.Int64
			b.SetParallelism(16)
			b.ReportAllocs()
			cpu0 := processCPU(b)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1)-1) % users
				u := newUAC(b, newClient(b), transport, e.addr(transport), exts[i], pws[i])
				contact := fmt.Sprintf("Contact: <sip:%s@127.0.0.1:%d>", exts[i], 9000+i)
				for pb.Next() {
					res, err := u.registerErr(contact)
					if err != nil || res.StatusCode != 200 {
						b.Errorf("REGISTER = %v, %v", res, err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "reg/s")
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/reg")
		})
	}
}

// BenchmarkRegisterUDP compares the two ways a REGISTER is handled, in the
// same run: sipgo's transaction layer (DisableFastPath) and the fast path
// (fastpath.go). Each op is a full digest registration over real UDP on
// loopback (REGISTER → 401 → REGISTER with credentials → 200, the binding
// on disk) from a raw client that costs little CPU itself. Reported: CPU
// of the whole process (server and client) per registration from
// getrusage, and allocations per registration (-benchmem). On a shared
// machine compare the two sub-benchmarks' ratio, not absolute numbers:
//
//	go test -run '^$' -bench 'RegisterUDP' -benchmem -count 3 ./sip/
func BenchmarkRegisterUDP(b *testing.B) {
	for _, mode := range []struct {
		name    string
		disable bool
	}{{"sipgo", true}, {"fastpath", false}} {
		b.Run(mode.name, func(b *testing.B) {
			e := newEnv(b, Config{DisableFastPath: mode.disable})
			exts, pws := benchUsers(e)
			users := len(exts)
			var next atomic.Int64
			b.SetParallelism(8)
			b.ReportAllocs()
			cpu0 := processCPU(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1)-1) % users
				c := newRawUAC(b, e.udpAddr, exts[i], pws[i])
				defer c.conn.Close()
				for pb.Next() {
					if err := c.register(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/reg")
		})
	}
}

// processCPU is the user+system CPU time the process used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rawUAC is a minimal UDP REGISTER client: requests written as text,
// responses read as text, retransmitted after 500 ms like Timer E.
type rawUAC struct {
	conn     *net.UDPConn
	ext, pw  string
	callID   string
	tag      string
	cseq     int
	local    string
	buf      []byte
	branchNo int

	// The last authenticated exchange of register.
	lastAuth, lastResponse string
	lastSent               []byte
}

func newRawUAC(b testing.TB, server, ext, pw string) *rawUAC {
	raddr, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		b.Fatal(err)
	}
	conn, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		b.Fatal(err)
	}
	return &rawUAC{conn: conn, ext: ext, pw: pw, callID: sip.GenerateTagN(16) + "@bench", tag: sip.GenerateTagN(8),
		local: conn.LocalAddr().String(), buf: make([]byte, 65535)}
}

func (c *rawUAC) message(auth string) []byte {
	c.cseq++
	c.branchNo++
	var sb strings.Builder
	fmt.Fprintf(&sb, "REGISTER sip:%s SIP/2.0\r\n", testDomain)
	fmt.Fprintf(&sb, "Via: SIP/2.0/UDP %s;rport;branch=z9hG4bK%s%d\r\n", c.local, c.tag, c.branchNo)
	sb.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&sb, "From: <sip:%s@%s>;tag=%s\r\n", c.ext, testDomain, c.tag)
	fmt.Fprintf(&sb, "To: <sip:%s@%s>\r\n", c.ext, testDomain)
	fmt.Fprintf(&sb, "Call-ID: %s\r\nCSeq: %d REGISTER\r\n", c.callID, c.cseq)
	fmt.Fprintf(&sb, "Contact: <sip:%s@%s>\r\nExpires: 3600\r\nUser-Agent: bench\r\n", c.ext, c.local)
	if auth != "" {
		sb.WriteString("Authorization: " + auth + "\r\n")
	}
	sb.WriteString("Content-Length: 0\r\n\r\n")
	return []byte(sb.String())
}

// exchange sends msg and returns the final response's text.
func (c *rawUAC) exchange(msg []byte) (string, error) {
	for try := 0; try < 6; try++ {
		if _, err := c.conn.Write(msg); err != nil {
			return "", err
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond << try))
		for {
			n, err := c.conn.Read(c.buf)
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					break
				}
				return "", err
			}
			res := string(c.buf[:n])
			if !strings.HasPrefix(res, "SIP/2.0 1") {
				return res, nil
			}
		}
	}
	return "", fmt.Errorf("no answer from the registrar")
}

func (c *rawUAC) register() error {
	res, err := c.exchange(c.message(""))
	if err != nil {
		return err
	}
	if !strings.HasPrefix(res, "SIP/2.0 401 ") {
		return fmt.Errorf("first REGISTER: %.40q", res)
	}
	var chal *digest.Challenge
	for _, line := range strings.Split(res, "\r\n") {
		name, value, _ := strings.Cut(line, ":")
		if strings.EqualFold(name, "WWW-Authenticate") && strings.Contains(value, "MD5") {
			if chal, err = digest.ParseChallenge(strings.TrimSpace(value)); err != nil {
				return err
			}
		}
	}
	if chal == nil {
		return fmt.Errorf("401 without an MD5 challenge")
	}
	cred, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: "sip:" + testDomain, Username: c.ext, Password: c.pw, Count: 1})
	if err != nil {
		return err
	}
	c.lastAuth = cred.String()
	c.lastSent = c.message(c.lastAuth)
	if res, err = c.exchange(c.lastSent); err != nil {
		return err
	}
	c.lastResponse = res
	if !strings.HasPrefix(res, "SIP/2.0 200 ") {
		return fmt.Errorf("authenticated REGISTER: %.40q", res)
	}
	return nil
}

// BenchmarkRawUACWork is the client's own share of BenchmarkRegisterUDP
// (building both requests, reading the 401, computing the digest) without
// the network or a server, to subtract from its per-registration figures.
func BenchmarkRawUACWork(b *testing.B) {
	const res401 = "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;rport=5999;branch=z9hG4bKx;received=127.0.0.1\r\n" +
		"From: <sip:5000@example.test>;tag=t\r\nTo: <sip:5000@example.test>;tag=u\r\nCall-ID: c@bench\r\nCSeq: 1 REGISTER\r\n" +
		"Content-Length: 0\r\nServer: dialtone\r\n" +
		"WWW-Authenticate: Digest realm=\"example.test\", nonce=\"GOqg-q8RoAACaHdI4zYmFh-PTLOBZmgp38LxBKdhD1U\", algorithm=SHA-256, qop=\"auth\"\r\n" +
		"WWW-Authenticate: Digest realm=\"example.test\", nonce=\"GOqg-q8RoAACaHdI4zYmFh-PTLOBZmgp38LxBKdhD1U\", algorithm=MD5, qop=\"auth\"\r\n\r\n"
	c := &rawUAC{ext: "5000", pw: "secret", callID: "c@bench", tag: "t", local: "127.0.0.1:5999", buf: make([]byte, 65535)}
	b.ReportAllocs()
	cpu0 := processCPU(b)
	for b.Loop() {
		_ = c.message("")
		res := string([]byte(res401))
		var chal *digest.Challenge
		for _, line := range strings.Split(res, "\r\n") {
			name, value, _ := strings.Cut(line, ":")
			if strings.EqualFold(name, "WWW-Authenticate") && strings.Contains(value, "MD5") {
				chal, _ = digest.ParseChallenge(strings.TrimSpace(value))
			}
		}
		cred, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: "sip:" + testDomain, Username: c.ext, Password: c.pw, Count: 1})
		if err != nil {
			b.Fatal(err)
		}
		_ = c.message(cred.String())
		_ = string(c.buf[:300]) // the 200 read as text
	}
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/reg")
}

// benchUsers adds the 64 users the REGISTER benchmarks register as.
func benchUsers(e *env) (exts, pws []string) {
	const users = 64
	exts, pws = make([]string, users), make([]string, users)
	for i := range users {
		u, pw := e.addUser(fmt.Sprintf("5%03d", i))
		exts[i], pws[i] = u.Extension, pw
	}
	return exts, pws
}
