package sip

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRegister measures a full digest registration (REGISTER → 401 →
// REGISTER → 200, the binding on disk) from many concurrent phones, over
// UDP and TCP on loopback. Report: registrations/s and CPU per one.
func BenchmarkRegister(b *testing.B) {
	for _, transport := range []string{"UDP", "TCP"} {
		b.Run(transport, func(b *testing.B) {
			e := newEnv(b, Config{})
			const users = 64
			pws := make([]string, users)
			exts := make([]string, users)
			for i := range users {
				u, pw := e.addUser(fmt.Sprintf("5%03d", i))
				exts[i], pws[i] = u.Extension, pw
			}
			var next atomic.Int64
			b.SetParallelism(16)
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
		})
	}
}
