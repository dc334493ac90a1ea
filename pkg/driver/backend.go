package driver

import (
	"context"
	"errors"
)

// Backend errors. The RPC boundary maps them to gRPC codes.
var (
	// ErrVolumeNotFound: no volume with that ID in the backend.
	ErrVolumeNotFound = errors.New("volume not found")
	// ErrNoSpace: the backend cannot hold a volume of that size.
	ErrNoSpace = errors.New("not enough space")
	// ErrBackendUnavailable: the backend cannot be used (missing VG, dir, tool).
	ErrBackendUnavailable = errors.New("backend unavailable")
)

// BackendVolume is a node-local block volume as the backend knows it.
type BackendVolume struct {
	// ID is the CSI volume ID (already validated by the caller).
	ID string
	// SizeBytes is the allocated size (rounded up to AllocationUnit).
	SizeBytes int64
	// Device is the block device path; empty until Attach.
	Device string
	// Meta is the metadata stored with the volume (name, validated
	// parameters, verified limits); the backend persists it verbatim.
	Meta map[string]string
}

// Backend carves node-local block devices for volumes. Implementations:
// loop (sparse files + loop devices) and lvm (linear LVs in a volume group).
// Every method is safe for concurrent use on different IDs; the driver
// serialises calls on one ID.
type Backend interface {
	// Name is "loop" or "lvm".
	Name() string
	// Check reports whether the backend is usable; wraps ErrBackendUnavailable.
	Check(ctx context.Context) error
	// AllocationUnit is the granularity sizes are rounded up to.
	AllocationUnit() int64
	// Create makes a volume of sizeBytes (already rounded) with meta. If a
	// volume with id exists it is returned unchanged (the caller compares).
	// Wraps ErrNoSpace when it does not fit.
	Create(ctx context.Context, id string, sizeBytes int64, meta map[string]string) (BackendVolume, error)
	// Get returns a volume or ErrVolumeNotFound.
	Get(ctx context.Context, id string) (BackendVolume, error)
	// Delete removes a volume; a missing volume is not an error.
	Delete(ctx context.Context, id string) error
	// Expand grows a volume to at least sizeBytes; never shrinks.
	Expand(ctx context.Context, id string, sizeBytes int64) (BackendVolume, error)
	// List returns every volume the backend holds, sorted by ID.
	List(ctx context.Context) ([]BackendVolume, error)
	// Capacity is the bytes available for new volumes.
	Capacity(ctx context.Context) (int64, error)
	// Attach makes the volume's block device present (a loop device is
	// re-attached after a restart or reboot) and returns its path.
	Attach(ctx context.Context, id string) (string, error)
	// SetMeta replaces stored metadata keys (e.g. verified atomic limits);
	// an empty value removes the key.
	SetMeta(ctx context.Context, id string, meta map[string]string) error
}
