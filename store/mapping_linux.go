package store

import (
	"os"

	"syscall"
)

const canTrimMapping = true

// dropMapping is madvise(MADV_DONTNEED) over size bytes of the map at addr.
func dropMapping(addr uintptr, size int64) error {
	ps := int64(os.Getpagesize())
	size = (size + ps - 1) / ps * ps
	if addr == 0 || size <= 0 {
		return nil
	}
	if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, addr, uintptr(size), syscall.MADV_DONTNEED); errno != 0 {
		return errno
	}
	return nil
}
