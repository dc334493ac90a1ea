package driver

import (
	"context"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

var _ spaceLister = (*LoopBackend)(nil)

// Spaces is the backend's one space: the directory's free space, carved
// into loop devices, which have no hardware atomic writes.
func (b *LoopBackend) Spaces(ctx context.Context) ([]DeviceSpace, error) {
	free, err := b.Capacity(ctx)
	if err != nil {
		return nil, err
	}
	name := "loop devices backed by " + b.dir
	return []DeviceSpace{{Device: name, FreeBytes: free, Limits: &untorn.DeviceLimits{
		Device: name, Name: "loop", Disk: "loop", LogicalBlockSize: 512, PhysicalBlockSize: 512,
	}}}, nil
}
