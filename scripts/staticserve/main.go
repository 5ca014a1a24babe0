// Command staticserve is the floor of scripts/bench-provisioning.sh: Go's
// net/http serving one file's bytes from memory, with no authentication and
// no store, through the same listener and server settings as dialtone's
// provisioning server. Its distance to nginx is what net/http itself costs;
// dialtone's distance to it is what dialtone adds.
package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/dialtone-voip/dialtone/provisioning"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	file := flag.String("file", "", "the file to serve at every path")
	cert := flag.String("tls-cert", "", "certificate (PEM); with -tls-key, serve HTTPS")
	key := flag.String("tls-key", "", "key (PEM)")
	flag.Parse()
	body, err := os.ReadFile(*file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "staticserve:", err)
		os.Exit(1)
	}
	sum := sha256.Sum256(body)
	etag := []string{`"` + hex.EncodeToString(sum[:16]) + `"`}
	length := []string{strconv.Itoa(len(body))}
	ctype, nostore, nosniff := []string{"text/plain; charset=utf-8"}, []string{"no-store"}, []string{"nosniff"}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd["Etag"], hd["Content-Type"], hd["Content-Length"] = etag, ctype, length
		hd["Cache-Control"], hd["X-Content-Type-Options"] = nostore, nosniff
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "staticserve:", err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	srv := &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10,
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
	if *cert != "" {
		err = srv.ServeTLS(provisioning.Listener(ln), *cert, *key)
	} else {
		err = srv.Serve(provisioning.Listener(ln))
	}
	fmt.Fprintln(os.Stderr, "staticserve:", err)
	os.Exit(1)
}
