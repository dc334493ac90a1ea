package driver

import (
	"context"
	"fmt"
	"sync"
)

// Volume lookup and the per-volume lock, for the controller and the node.

// inFlight is the set of volumes with an operation under way. A second call
// on the same key is refused at once (Aborted) and the sidecar retries;
// calls on different volumes never wait for each other.
type inFlight struct {
	mu   sync.Mutex
	keys map[string]struct{}
}

func newInFlight() *inFlight { return &inFlight{keys: map[string]struct{}{}} }

// acquire marks key busy and returns the release function, or an error
// wrapping ErrInFlight.
func (f *inFlight) acquire(key string) (func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, busy := f.keys[key]; busy {
		return nil, fmt.Errorf("%w: %s", ErrInFlight, key)
	}
	f.keys[key] = struct{}{}
	return func() {
		f.mu.Lock()
		delete(f.keys, key)
		f.mu.Unlock()
	}, nil
}

// volume is a backend volume with its class read from its metadata.
type volume struct {
	BackendVolume
	spec volumeSpec
}

// getVolume looks a volume up by an ID from a request; IDs this driver
// never hands out are NotFound without touching the backend.
func (d *Driver) getVolume(ctx context.Context, id string) (BackendVolume, error) {
	if !validVolumeID(id) {
		return BackendVolume{}, fmt.Errorf("%w: %q is not a volume ID of this driver", ErrVolumeNotFound, id)
	}
	return d.backend.Get(ctx, id)
}

// lookupVolume looks a volume up as getVolume does and reads its class
// from its metadata.
func (d *Driver) lookupVolume(ctx context.Context, id string) (volume, error) {
	bv, err := d.getVolume(ctx, id)
	if err != nil {
		return volume{}, err
	}
	spec, err := specOf(bv.Meta)
	if err != nil {
		return volume{}, fmt.Errorf("volume %s: stored class: %w", id, err)
	}
	return volume{BackendVolume: bv, spec: spec}, nil
}

// lockVolume takes the volume's in-flight lock and looks the volume up,
// with its class, under it; on success the caller runs release when done.
func (d *Driver) lockVolume(ctx context.Context, id string) (volume, func(), error) {
	release, err := d.inflight.acquire(id)
	if err != nil {
		return volume{}, nil, err
	}
	vol, err := d.lookupVolume(ctx, id)
	if err != nil {
		release()
		return volume{}, nil, err
	}
	return vol, release, nil
}

// lockPath checks the volume ID and the node path of a call that only
// unmounts (unstage, unpublish): the ID is required and must pass valid
// (else NotFound), the path is checked by nodePath. It takes the volume's
// lock and returns the cleaned path; the caller runs release when done.
func (d *Driver) lockPath(id, field, p string, valid func(string) bool) (string, func(), error) {
	if err := required("volume_id", id); err != nil {
		return "", nil, err
	}
	c, err := d.nodePath(field, p, pathAny)
	if err != nil {
		return "", nil, err
	}
	if !valid(id) {
		return "", nil, fmt.Errorf("%w: %q is not a volume ID of this driver", ErrVolumeNotFound, id)
	}
	release, err := d.inflight.acquire(id)
	if err != nil {
		return "", nil, err
	}
	return c, release, nil
}

// volumeDevice is the device of a volume: the one recorded at staging, else
// the one the backend has attached ("" when none).
func (d *Driver) volumeDevice(ctx context.Context, id string, st stagedVolume, staged bool) (string, error) {
	if staged && st.Device != "" {
		return st.Device, nil
	}
	vol, err := d.backend.Get(ctx, id)
	if err != nil {
		return "", err
	}
	return vol.Device, nil
}
