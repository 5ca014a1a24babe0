//go:build loopback

package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dialtone-voip/dialtone/sip"
	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
)

// BenchmarkDialtoneLoopback is a whole REGISTER round trip (REGISTER → 401 →
// REGISTER with digest → 200, the binding committed to bbolt) against
// dialtone's registrar in this process, on loopback, with sipload's engine
// keeping 256 exchanges in flight. ns/op is wall time per registration;
// reg/s the throughput. Generator and registrar share the CPUs, so for the
// registrar's own share use a CPU profile:
//
//	go test -tags loopback -run '^$' -bench DialtoneLoopback -cpuprofile cpu.out ./cmd/sipload
//	go tool pprof -top cpu.out
//
// It is behind the loopback build tag so that sipload's own tests never
// depend on the sip package compiling (sip has its own round-trip
// benchmark, BenchmarkRegister, which `make bench` runs).
func BenchmarkDialtoneLoopback(b *testing.B) {
	const users = 256
	db := storetest.Open(b, nil)
	if _, _, err := db.EnsureAccount(store.DefaultAccount, "bench.test"); err != nil {
		b.Fatal(err)
	}
	creds := make([]userCred, users)
	for i := range creds {
		ext := fmt.Sprintf("2%04d", i)
		if _, err := db.CreateUser(store.DefaultAccount, store.NewUser{Extension: ext, Name: "Load " + ext}, store.System); err != nil {
			b.Fatal(err)
		}
		id, err := db.SIPIdentity("bench.test", ext)
		if err != nil {
			b.Fatal(err)
		}
		creds[i] = userCred{user: ext, password: id.Password}
	}
	srv, err := sip.New(sip.Config{}, db, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := sip.NewRegistrar(srv, sip.RegistrarConfig{}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(func() { cancel(); srv.Close() })
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.ServeUDP(ctx, udp)
	go srv.ServeTCP(ctx, tcp)

	for _, tr := range []struct{ name, addr string }{{"udp", udp.LocalAddr().String()}, {"tcp", tcp.Addr().String()}} {
		b.Run(tr.name, func(b *testing.B) {
			cfg, _, err := parseFlags([]string{"-target", tr.addr, "-transport", tr.name, "-domain", "bench.test", "-users", "256", "-concurrency", "256", "-timeout", "5s"}, nil)
			if err != nil {
				b.Fatal(err)
			}
			e, err := newEngine(cfg, creds)
			if err != nil {
				b.Fatal(err)
			}
			sctx, stop := context.WithCancel(ctx)
			defer func() { stop(); e.close() }()
			go e.sweep(sctx)
			b.ResetTimer()
			r := e.runN(b.N, nil)
			b.StopTimer()
			if r.OK == 0 {
				b.Fatalf("no registration succeeded: %v", r.Failures)
			}
			if r.Failed > 0 {
				b.Logf("%d of %d registrations failed: %v", r.Failed, r.Started, r.Failures)
			}
			b.ReportMetric(100*r.FailFraction, "fail-%")
			b.ReportMetric(float64(r.OK)/b.Elapsed().Seconds(), "reg/s")
			b.ReportMetric(r.P50ms, "p50-ms")
			b.ReportMetric(r.P99ms, "p99-ms")
		})
	}
}
