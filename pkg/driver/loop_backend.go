package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"k8s.io/klog/v2"
	"k8s.io/utils/exec"
)

// LoopBackend keeps each volume as a sparse file <id>.img under a directory,
// attached as a loop device with direct I/O, and its metadata in <id>.json
// next to it. The JSON file is written first and marks the pair as made by
// this backend: Delete never removes an image without it.
type LoopBackend struct {
	dir     string
	reserve int64
	exec    exec.Interface
	sysfs   string

	// mu serialises space accounting (create, expand) so concurrent
	// creates of different volumes cannot overcommit the directory.
	mu sync.Mutex
}

const (
	loopAllocationUnit = 1 << 20
	loopCreatedBy      = DriverName
)

type loopRecord struct {
	ID        string            `json:"id"`
	SizeBytes int64             `json:"sizeBytes"`
	Meta      map[string]string `json:"meta"`
	CreatedBy string            `json:"createdBy"`
}

var _ Backend = (*LoopBackend)(nil)

// NewLoopBackend returns a loop backend in dir keeping reserve bytes free.
func NewLoopBackend(dir string, reserve int64, runner exec.Interface) *LoopBackend {
	return &LoopBackend{dir: dir, reserve: reserve, exec: runner, sysfs: "/sys"}
}

func (b *LoopBackend) Name() string          { return "loop" }
func (b *LoopBackend) AllocationUnit() int64 { return loopAllocationUnit }

func (b *LoopBackend) Check(ctx context.Context) error {
	fi, err := os.Stat(b.dir)
	if err != nil {
		return fmt.Errorf("%w: loop dir: %v", ErrBackendUnavailable, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: loop dir %s is not a directory", ErrBackendUnavailable, b.dir)
	}
	if _, err := b.exec.LookPath("losetup"); err != nil {
		return fmt.Errorf("%w: losetup not found: %v", ErrBackendUnavailable, err)
	}
	return nil
}

func (b *LoopBackend) paths(id string) (img, meta string, err error) {
	if !validVolumeID(id) {
		return "", "", fmt.Errorf("%w: %q is not a volume ID of this driver", ErrVolumeNotFound, id)
	}
	return filepath.Join(b.dir, id+".img"), filepath.Join(b.dir, id+".json"), nil
}

func (b *LoopBackend) readRecord(id string) (loopRecord, error) {
	_, metaPath, err := b.paths(id)
	if err != nil {
		return loopRecord{}, err
	}
	data, err := os.ReadFile(metaPath)
	if errors.Is(err, os.ErrNotExist) {
		return loopRecord{}, fmt.Errorf("%w: %s", ErrVolumeNotFound, id)
	}
	if err != nil {
		return loopRecord{}, err
	}
	var r loopRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return loopRecord{}, fmt.Errorf("loop metadata %s: %w", metaPath, err)
	}
	if r.ID != id || r.CreatedBy != loopCreatedBy {
		return loopRecord{}, fmt.Errorf("%w: %s holds no volume of this driver", ErrVolumeNotFound, metaPath)
	}
	return r, nil
}

func (b *LoopBackend) writeRecord(r loopRecord) error {
	_, metaPath, err := b.paths(r.ID)
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(metaPath, data)
}

func (b *LoopBackend) Create(ctx context.Context, id string, sizeBytes int64, meta map[string]string) (BackendVolume, error) {
	img, _, err := b.paths(id)
	if err != nil {
		return BackendVolume{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if r, err := b.readRecord(id); err == nil {
		if fi, err := os.Stat(img); err == nil && fi.Size() >= r.SizeBytes {
			return r.volume(""), nil
		}
		// A create interrupted after the record: finish it below.
	} else if !errors.Is(err, ErrVolumeNotFound) {
		return BackendVolume{}, err
	}
	avail, err := b.capacityLocked()
	if err != nil {
		return BackendVolume{}, err
	}
	if sizeBytes > avail {
		return BackendVolume{}, fmt.Errorf("%w: %d bytes requested, %d available in %s", ErrNoSpace, sizeBytes, avail, b.dir)
	}
	r := loopRecord{ID: id, SizeBytes: sizeBytes, Meta: copyMeta(meta), CreatedBy: loopCreatedBy}
	if err := b.writeRecord(r); err != nil {
		return BackendVolume{}, err
	}
	f, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return BackendVolume{}, err
	}
	if err := f.Truncate(sizeBytes); err != nil {
		f.Close()
		return BackendVolume{}, err
	}
	if err := f.Close(); err != nil {
		return BackendVolume{}, err
	}
	return r.volume(""), nil
}

func (r loopRecord) volume(dev string) BackendVolume {
	return BackendVolume{ID: r.ID, SizeBytes: r.SizeBytes, Device: dev, Meta: copyMeta(r.Meta)}
}

func copyMeta(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Get returns the volume with its loop device when one is attached.
func (b *LoopBackend) Get(ctx context.Context, id string) (BackendVolume, error) {
	r, err := b.readRecord(id)
	if err != nil {
		return BackendVolume{}, err
	}
	img, _, _ := b.paths(id)
	devs, err := b.loopDevices(ctx, img)
	if err != nil {
		return BackendVolume{}, err
	}
	dev := ""
	if len(devs) > 0 {
		dev = devs[0]
	}
	return r.volume(dev), nil
}

func (b *LoopBackend) Delete(ctx context.Context, id string) error {
	img, metaPath, err := b.paths(id)
	if err != nil {
		return nil
	}
	if _, err := b.readRecord(id); errors.Is(err, ErrVolumeNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	devs, err := b.loopDevices(ctx, img)
	if err != nil {
		return err
	}
	for _, dev := range devs {
		if _, err := b.run(ctx, "losetup", "--detach", dev); err != nil {
			return err
		}
	}
	if err := os.Remove(img); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Remove(metaPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	klog.V(4).InfoS("loop volume removed", "volumeID", id, "detached", devs)
	return nil
}

func (b *LoopBackend) Expand(ctx context.Context, id string, sizeBytes int64) (BackendVolume, error) {
	img, _, err := b.paths(id)
	if err != nil {
		return BackendVolume{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	r, err := b.readRecord(id)
	if err != nil {
		return BackendVolume{}, err
	}
	sizeBytes = roundUp(sizeBytes, loopAllocationUnit)
	if sizeBytes > r.SizeBytes {
		avail, err := b.capacityLocked()
		if err != nil {
			return BackendVolume{}, err
		}
		if sizeBytes-r.SizeBytes > avail {
			return BackendVolume{}, fmt.Errorf("%w: growing by %d bytes, %d available in %s", ErrNoSpace, sizeBytes-r.SizeBytes, avail, b.dir)
		}
		if err := os.Truncate(img, sizeBytes); err != nil {
			return BackendVolume{}, err
		}
		r.SizeBytes = sizeBytes
		if err := b.writeRecord(r); err != nil {
			return BackendVolume{}, err
		}
	}
	devs, err := b.loopDevices(ctx, img)
	if err != nil {
		return BackendVolume{}, err
	}
	for _, dev := range devs {
		// Make the loop device see the new size of its file (online).
		if _, err := b.run(ctx, "losetup", "--set-capacity", dev); err != nil {
			return BackendVolume{}, err
		}
	}
	dev := ""
	if len(devs) > 0 {
		dev = devs[0]
	}
	return r.volume(dev), nil
}

func (b *LoopBackend) List(ctx context.Context) ([]BackendVolume, error) {
	ents, err := os.ReadDir(b.dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBackendUnavailable, err)
	}
	var out []BackendVolume
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !validVolumeID(id) {
			continue
		}
		r, err := b.readRecord(id)
		if errors.Is(err, ErrVolumeNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r.volume(""))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (b *LoopBackend) Capacity(ctx context.Context) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.capacityLocked()
}

// capacityLocked is the directory's free space minus the reserve minus
// what the existing sparse images may still grow into.
func (b *LoopBackend) capacityLocked() (int64, error) {
	free, err := freeBytes(b.dir)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrBackendUnavailable, err)
	}
	vols, err := b.List(context.Background())
	if err != nil {
		return 0, err
	}
	avail := free - b.reserve
	for _, v := range vols {
		img, _, _ := b.paths(v.ID)
		used, err := allocatedBytes(img)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
		if v.SizeBytes > used {
			avail -= v.SizeBytes - used
		}
	}
	return max(avail, 0), nil
}

// Attach returns the loop device of the volume's image, attaching it with
// direct I/O if no loop device holds it (after a restart or reboot).
func (b *LoopBackend) Attach(ctx context.Context, id string) (string, error) {
	img, _, err := b.paths(id)
	if err != nil {
		return "", err
	}
	if _, err := b.readRecord(id); err != nil {
		return "", err
	}
	devs, err := b.loopDevices(ctx, img)
	if err != nil {
		return "", err
	}
	if len(devs) > 0 {
		return devs[0], nil
	}
	out, err := b.run(ctx, "losetup", "--find", "--show", "--direct-io=on", img)
	if err != nil {
		return "", err
	}
	dev := strings.TrimSpace(out)
	if !strings.HasPrefix(dev, "/dev/loop") {
		return "", fmt.Errorf("losetup printed %q, not a loop device", dev)
	}
	klog.V(2).InfoS("attached loop device", "volumeID", id, "device", dev)
	return dev, nil
}

func (b *LoopBackend) SetMeta(ctx context.Context, id string, meta map[string]string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, err := b.readRecord(id)
	if err != nil {
		return err
	}
	if r.Meta == nil {
		r.Meta = map[string]string{}
	}
	for k, v := range meta {
		if v == "" {
			delete(r.Meta, k)
		} else {
			r.Meta[k] = v
		}
	}
	return b.writeRecord(r)
}

// loopDevices lists the loop devices backed by file. It reads
// /sys/block/loop*/loop/backing_file (no process to start, which keeps
// staging cheap) and falls back to losetup when sysfs has no loop entries.
func (b *LoopBackend) loopDevices(ctx context.Context, file string) ([]string, error) {
	want, err := filepath.EvalSymlinks(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	entries, err := filepath.Glob(filepath.Join(b.sysfs, "block", "loop*", "loop", "backing_file"))
	if err != nil || len(entries) == 0 {
		return b.loopDevicesLosetup(ctx, file)
	}
	var devs []string
	for _, e := range entries {
		data, err := os.ReadFile(e)
		if err != nil {
			continue // detached meanwhile
		}
		if strings.TrimSuffix(string(data), "\n") == want {
			devs = append(devs, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(e))))
		}
	}
	sort.Strings(devs)
	return devs, nil
}

func (b *LoopBackend) loopDevicesLosetup(ctx context.Context, file string) ([]string, error) {
	out, err := b.run(ctx, "losetup", "--list", "--noheadings", "--output", "NAME", "--associated", file)
	if err != nil {
		return nil, err
	}
	var devs []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			devs = append(devs, l)
		}
	}
	sort.Strings(devs)
	return devs, nil
}

// run runs a command with LC_ALL=C and returns stdout; stderr goes into the error.
func (b *LoopBackend) run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := b.exec.CommandContext(ctx, name, args...)
	cmd.SetEnv(append(os.Environ(), "LC_ALL=C"))
	var stdout, stderr bytes.Buffer
	cmd.SetStdout(&stdout)
	cmd.SetStderr(&stderr)
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), ctx.Err())
		}
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
