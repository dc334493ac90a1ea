// Command untornctl probes block devices for atomic write support, plans a
// format that keeps it, and verifies a mounted filesystem with a real
// RWF_ATOMIC write.
//
//	untornctl probe DEVICE [--sysfs-root DIR] [--json]
//	untornctl plan DEVICE --fs ext4|xfs --unit SIZE [--cluster SIZE] [--policy require|prefer] [--sysfs-root DIR] [--json]
//	untornctl verify PATH [--unit SIZE] [--json]
//
// Exit status: 0 success (verify: atomic writes of the unit work), 3 verify
// found no atomic writes of the unit, 2 usage or I/O errors.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
