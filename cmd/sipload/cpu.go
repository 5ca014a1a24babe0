package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
)

// setBuffers gives a generator socket large kernel buffers, so bursts of
// responses are not dropped at the generator (which would be counted as the
// target's timeouts). SO_RCVBUFFORCE lifts the net.core.rmem_max cap when
// running as root; otherwise the capped SO_RCVBUF applies.
func setBuffers(c *net.UDPConn, n int) {
	_ = c.SetReadBuffer(n)
	_ = c.SetWriteBuffer(n)
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n)
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, n)
		})
	}
}

// selfCPU is the CPU time (user + system) this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTick is USER_HZ, the unit of utime/stime in /proc/PID/stat; it is 100
// on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// procStat reads utime+stime and the parent pid from /proc/PID/stat.
func procStat(pid int) (cpu time.Duration, ppid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseProcStat(b)
}

// parseProcStat parses the fields after the command name, which is in
// parentheses and may itself contain spaces and parentheses.
func parseProcStat(b []byte) (cpu time.Duration, ppid int, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("bad /proc stat line")
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("bad /proc stat line")
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	ut, err2 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err3 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, fmt.Errorf("bad /proc stat line")
	}
	return time.Duration(ut+st) * clockTick, ppid, nil
}

// withDescendants returns pids plus every process descending from them (a
// registrar like Kamailio forks worker processes whose CPU only reaches the
// parent's counters when they exit).
func withDescendants(pids []int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return pids
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, err := procStat(pid); err == nil {
			children[ppid] = append(children[ppid], pid)
		}
	}
	seen := map[int]bool{}
	var out []int
	queue := append([]int(nil), pids...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
		queue = append(queue, children[p]...)
	}
	return out
}

// targetCPU sums the CPU time of pids (processes that vanished count as 0).
func targetCPU(pids []int) time.Duration {
	var sum time.Duration
	for _, p := range pids {
		if c, _, err := procStat(p); err == nil {
			sum += c
		}
	}
	return sum
}
