// Package atomic knows what a Linux block device and filesystem offer for
// untorn (atomic) writes, plans a format that keeps those guarantees, verifies
// a mounted filesystem with a real RWF_ATOMIC write, and gives Go callers an
// atomic write API.
//
// Import it under an alias where sync/atomic is also used:
//
//	import untorn "github.com/untorn/untorn/pkg/atomic"
package atomic
