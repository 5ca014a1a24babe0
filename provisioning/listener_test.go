package provisioning_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/provisioning"
)

// countingListener counts the Write calls on its connections.
type countingListener struct {
	net.Listener
	writes *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestListenerOneWritePerAnswer: through provisioning.Listener a 10 KiB
// answer (net/http writes it in two pieces) reaches the socket in one
// write, every answer on a kept-alive connection arrives whole, and a
// request that fails to parse still gets its 400.
func TestListenerOneWritePerAnswer(t *testing.T) {
	body := bytes.Repeat([]byte("account.1.enable = 1\n"), 520) // ~10.9 KB, like a T54W file
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var writes atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		_, _ = w.Write(body)
	})}
	go func() { _ = srv.Serve(provisioning.Listener(countingListener{ln, &writes})) }()
	t.Cleanup(func() { _ = srv.Close() })

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	const n = 5
	for i := range n {
		if _, err := fmt.Fprintf(c, "GET /f%d HTTP/1.1\r\nHost: x\r\n\r\n", i); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		got, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("answer %d: %d bytes, %v; want the %d-byte body", i, len(got), err, len(body))
		}
	}
	if w := writes.Load(); w != n {
		t.Fatalf("%d writes for %d answers, want one each", w, n)
	}
	if _, err := io.WriteString(c, "BROKEN\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusBadRequest {
		t.Fatalf("malformed request: %v, %v; want 400", res, err)
	}
}

// TestListenerTLS: the handshake and kept-alive answers work over TLS.
func TestListenerTLS(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 10850)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(body) }))
	srv.Listener = provisioning.Listener(srv.Listener)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	client := srv.Client()
	client.Transport.(*http.Transport).TLSClientConfig.MinVersion = tls.VersionTLS12
	for i := range 3 {
		res, err := client.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("answer %d over TLS: %d bytes, %v", i, len(got), err)
		}
	}
}

// TestListenerReadDuringAnswer: a Read that starts while an answer is half
// written (net/http's background read during the handler) does not send the
// half; the answer leaves whole when the server sets the next read deadline.
func TestListenerReadDuringAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var writes atomic.Int64
	cl := provisioning.Listener(countingListener{ln, &writes})
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	sc, err := cl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()

	head := []byte("HTTP/1.1 200 OK\r\nContent-Length: 8192\r\n\r\n")
	if _, err := sc.Write(append(head, bytes.Repeat([]byte("a"), 4096)...)); err != nil {
		t.Fatal(err)
	}
	readDone := make(chan error, 1)
	go func() { _, err := sc.Read(make([]byte, 1)); readDone <- err }()
	// Give the background Read time to enter; with the old flush-on-Read
	// the first half would be written here.
	for i := 0; i < 50 && writes.Load() == 0; i++ {
		time.Sleep(time.Millisecond)
	}
	if w := writes.Load(); w != 0 {
		t.Fatalf("a Read during the answer wrote %d time(s), want 0", w)
	}
	if _, err := sc.Write(bytes.Repeat([]byte("b"), 4096)); err != nil {
		t.Fatal(err)
	}
	if err := sc.SetReadDeadline(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if w := writes.Load(); w != 1 {
		t.Fatalf("%d writes for one answer, want 1", w)
	}
	res, err := http.ReadResponse(bufio.NewReader(client), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	if len(got) != 8192 {
		t.Fatalf("body %d bytes, want 8192", len(got))
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := <-readDone; err != nil {
		t.Fatalf("background read: %v", err)
	}
}
