package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestDescriptorExhaustion runs the dialtone binary with 256 file
// descriptors and opens more idle SIP TCP connections than that (the caps
// are raised so that accept really fails with "too many open files"). The
// process must stay up: accept backs off and retries (issue: the serve loop
// used to return and stop the whole process). It keeps answering over UDP
// meanwhile, and over a new TCP connection once the idle ones are gone.
func TestDescriptorExhaustion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh to set the descriptor limit")
	}
	bin := buildBinary(t)
	// ulimit -n sets the soft and the hard limit, so Go's runtime cannot raise it again.
	cmd := exec.Command("sh", "-c", `ulimit -n 256 && exec "$0" "$@"`, bin,
		"--data", t.TempDir(), "--sip-addr", "127.0.0.1:0", "--provisioning-addr", "127.0.0.1:0",
		"--admin-addr", "127.0.0.1:0", "--domain", "example.test", "--bootstrap-token", testToken, "--log-format", "json",
		"--sip-max-connections", "100000", "--sip-max-connections-per-ip", "100000")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed once the process is gone; exitErr says how
	var exitErr error
	var mu sync.Mutex
	var logs strings.Builder
	readyc := make(chan addrs, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			logs.WriteString(line + "\n")
			mu.Unlock()
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "dialtone ready" {
				readyc <- addrs{SIPUDP: fmt.Sprint(m["sip_udp"]), SIPTCP: fmt.Sprint(m["sip_tcp"])}
			}
		}
		exitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		if t.Failed() {
			mu.Lock()
			t.Logf("dialtone log:\n%s", logs.String())
			mu.Unlock()
		}
	})
	var a addrs
	select {
	case a = <-readyc:
	case <-exited:
		t.Fatalf("dialtone exited before it was ready: %v", exitErr)
	case <-time.After(20 * time.Second):
		t.Fatal("dialtone not ready after 20 s")
	}

	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for i := 0; i < 400; i++ {
		c, err := net.DialTimeout("tcp", a.SIPTCP, 2*time.Second)
		if err != nil {
			break // the backlog is full: more than enough
		}
		idle = append(idle, c)
	}
	logged := func(msg string) bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(logs.String(), msg)
	}
	deadline := time.Now().Add(15 * time.Second)
	for !logged("SIP accept failed; retrying") {
		select {
		case <-exited:
			t.Fatalf("dialtone exited when it ran out of descriptors: %v", exitErr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no accept error after %d idle connections; the limit was not reached", len(idle))
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Out of descriptors, still alive and answering over UDP.
	if status := optionsStatus(t, "udp", a.SIPUDP); status != 200 {
		t.Fatalf("OPTIONS over UDP while out of descriptors = %d, want 200", status)
	}
	for _, c := range idle {
		c.Close()
	}
	idle = nil
	// Once the idle connections are gone, a new TCP connection is served.
	deadline = time.Now().Add(15 * time.Second)
	for optionsStatus(t, "tcp", a.SIPTCP) != 200 {
		select {
		case <-exited:
			t.Fatalf("dialtone exited: %v", exitErr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no TCP answer 15 s after the idle connections closed")
		}
	}
	select {
	case <-exited:
		t.Fatalf("dialtone exited: %v", exitErr)
	default:
	}
}

// optionsStatus sends one OPTIONS and returns the status (0: no answer in 2 s).
func optionsStatus(t *testing.T, network, addr string) int {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 2*time.Second)
	if err != nil {
		return 0
	}
	defer c.Close()
	branch := fmt.Sprintf("z9hG4bKrl%d", time.Now().UnixNano())
	msg := "OPTIONS sip:example.test SIP/2.0\r\nVia: SIP/2.0/" + strings.ToUpper(network) + " 127.0.0.1:5999;branch=" + branch +
		"\r\nMax-Forwards: 70\r\nFrom: <sip:probe@example.test>;tag=1\r\nTo: <sip:example.test>\r\nCall-ID: " + branch +
		"\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		return 0
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return 0
	}
	var code int
	fmt.Sscanf(string(buf[:n]), "SIP/2.0 %d", &code)
	return code
}
