// Command vmtool is the small helper the untorn test guest uses where a
// shell cannot reach: statx(STATX_WRITE_ATOMIC) of a path, pwritev2 with
// RWF_ATOMIC on an O_DIRECT descriptor, and the crash-model check of
// hack/bench/crash.sh (a writer that resets the machine with writes in
// flight, and a checker that classifies every slot afterwards).
//
// It deliberately does not use pkg/atomic: the VM tests compare what the
// product reports with what this independent reading of the kernel shows.
package main
