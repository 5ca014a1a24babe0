package main

import (
	"log/slog"
	"net"
	"syscall"
)

// sipUDPBuffer is the receive buffer asked for on the SIP UDP socket. The
// kernel's default (about 208 KiB) holds a few hundred REGISTERs: a burst —
// every phone re-registering after an outage — overflows it and the kernel
// drops datagrams before dialtone can read them (RcvbufErrors), where
// dialtone would rather answer 503 with Retry-After.
const sipUDPBuffer = 8 << 20

// enlargeReceiveBuffer raises pc's receive buffer to n bytes: with
// SO_RCVBUFFORCE where the process may (root/CAP_NET_ADMIN), else as far as
// net.core.rmem_max allows. Best effort: a failure is logged, not fatal.
func enlargeReceiveBuffer(pc net.PacketConn, n int, log *slog.Logger) {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return
	}
	_ = uc.SetReadBuffer(n)
	if raw, err := uc.SyscallConn(); err == nil {
		var serr error
		if err := raw.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n)
		}); err == nil && serr == nil {
			return
		}
	}
	log.Info("SIP UDP receive buffer limited by net.core.rmem_max; raise it for re-registration storms", "wanted_bytes", n)
}
