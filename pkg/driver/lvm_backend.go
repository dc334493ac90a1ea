package driver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"k8s.io/klog/v2"
	"k8s.io/utils/exec"
)

// LVM tags. Every LV the backend creates carries lvmOwnerTag; the backend
// never returns, changes or removes an LV without it. Each metadata entry is
// one tag "untorn.m.<KEY>.<VALUE>" with key and value in unpadded base32
// (RFC 4648 alphabet A-Z2-7), which stays inside LVM's tag character set
// (A-Za-z0-9_+.-/=!:&#) whatever the key and value hold.
const (
	lvmOwnerTag      = "untorn.csi.dev"
	lvmMetaTagPrefix = "untorn.m."
	// lvmMaxTagLen caps one tag. lvm2 2.03 accepts longer tags, but every
	// tag lives in the VG metadata area, which every LVM command reads.
	lvmMaxTagLen = 1024
	// lvmMaxFullName is the longest "VG/LV" lvm2 2.03 accepts.
	lvmMaxFullName = 125
	// lvmDefaultExtent is LVM's default extent size, used as the allocation
	// unit until vgs has reported the real one.
	lvmDefaultExtent = 4 << 20
)

// LVMBackend carves linear logical volumes out of one LVM volume group. It
// drives the lvm2 commands through an exec.Interface, so tests can script
// them; every command runs with LC_ALL=C and reports in JSON.
type LVMBackend struct {
	vg     string
	runner exec.Interface
	env    []string
	// extent is the VG's extent size in bytes, refreshed by every vgs call.
	extent atomic.Int64
}

var _ Backend = (*LVMBackend)(nil)

// NewLVMBackend returns a backend for volume group vg. It runs no command;
// Check tells whether the VG is usable.
func NewLVMBackend(vg string, runner exec.Interface) *LVMBackend {
	b := &LVMBackend{vg: vg, runner: runner, env: lvmEnv(os.Environ())}
	b.extent.Store(lvmDefaultExtent)
	return b
}

// lvmEnv is the environment of every lvm command: the driver's own without
// locale settings, then LC_ALL=C so messages are the untranslated ones the
// error mapping looks for, and no warnings about inherited descriptors.
func lvmEnv(base []string) []string {
	env := make([]string, 0, len(base)+2)
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if k == "LANG" || k == "LANGUAGE" || strings.HasPrefix(k, "LC_") || k == "LVM_SUPPRESS_FD_WARNINGS" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "LVM_SUPPRESS_FD_WARNINGS=1")
}

// Name implements Backend.
func (b *LVMBackend) Name() string { return "lvm" }

// AllocationUnit is the VG's extent size (LVM's default 4 MiB until the
// first vgs call has reported it).
func (b *LVMBackend) AllocationUnit() int64 { return b.extent.Load() }

// Check runs vgs on the volume group; any failure wraps ErrBackendUnavailable.
func (b *LVMBackend) Check(ctx context.Context) error {
	if _, err := b.vgInfo(ctx); err != nil {
		if errors.Is(err, ErrBackendUnavailable) {
			return err
		}
		return fmt.Errorf("%w: %w", ErrBackendUnavailable, err)
	}
	return nil
}

// Capacity is the VG's free space.
func (b *LVMBackend) Capacity(ctx context.Context) (int64, error) {
	vg, err := b.vgInfo(ctx)
	if err != nil {
		return 0, err
	}
	return vg.free, nil
}

// Create makes a linear LV named id. Old signatures at its extents are wiped
// and its first 4 KiB zeroed (-W y -Z y), so a filesystem a removed LV left
// there never shows through and the node formats the new volume.
func (b *LVMBackend) Create(ctx context.Context, id string, sizeBytes int64, meta map[string]string) (BackendVolume, error) {
	return b.create(ctx, id, sizeBytes, meta, nil)
}

// create is Create on the physical volumes pvs (any of the VG's when nil).
func (b *LVMBackend) create(ctx context.Context, id string, sizeBytes int64, meta map[string]string, pvs []string) (BackendVolume, error) {
	if err := ValidateLVName(b.vg, id); err != nil {
		return BackendVolume{}, fmt.Errorf("%w: volume ID: %w", ErrInvalidArgument, err)
	}
	if sizeBytes <= 0 {
		return BackendVolume{}, fmt.Errorf("%w: volume size %d must be positive", ErrInvalidArgument, sizeBytes)
	}
	sizeBytes, err := b.extents(sizeBytes)
	if err != nil {
		return BackendVolume{}, err
	}
	tags, err := encodeMetaTags(meta)
	if err != nil {
		return BackendVolume{}, err
	}
	switch v, err := b.Get(ctx, id); {
	case err == nil:
		return v, nil
	case errors.Is(err, errForeignLV):
		return BackendVolume{}, fmt.Errorf("%w: logical volume %s/%s exists and was not created by untorn",
			ErrAlreadyExists, b.vg, id)
	case !errors.Is(err, ErrVolumeNotFound):
		return BackendVolume{}, err
	}
	args := []string{"--yes", "--type", "linear", "-n", id, "-L", strconv.FormatInt(sizeBytes, 10) + "b",
		"-W", "y", "-Z", "y", "--addtag", lvmOwnerTag}
	for _, t := range tags {
		args = append(args, "--addtag", t)
	}
	args = append(append(args, b.vg), pvs...)
	// lvcreate never adopts: errLVExists means an LV of that name appeared
	// meanwhile. It is returned only when it carries the owner tag.
	if _, err := b.run(ctx, "lvcreate", args...); err != nil && !errors.Is(err, errLVExists) {
		return BackendVolume{}, err
	}
	v, err := b.Get(ctx, id)
	if errors.Is(err, errForeignLV) {
		return BackendVolume{}, fmt.Errorf("%w: logical volume %s/%s appeared meanwhile and was not created by untorn",
			ErrAlreadyExists, b.vg, id)
	}
	if err != nil {
		return BackendVolume{}, err
	}
	klog.V(4).InfoS("created logical volume", "vg", b.vg, "lv", id, "sizeBytes", v.SizeBytes)
	return v, nil
}

// extents rounds size up to the VG's extent size, as lvcreate and lvextend
// do; a size whose rounding does not fit in an int64 is ErrOutOfRange.
func (b *LVMBackend) extents(size int64) (int64, error) {
	n, ok := roundUpChecked(size, b.AllocationUnit())
	if !ok {
		return 0, fmt.Errorf("%w: %d bytes cannot be rounded up to whole %d-byte extents", ErrOutOfRange, size, b.AllocationUnit())
	}
	return n, nil
}

// Get returns the LV named id, or ErrVolumeNotFound (also for an LV of that
// name the backend did not create).
func (b *LVMBackend) Get(ctx context.Context, id string) (BackendVolume, error) {
	lv, err := b.lv(ctx, id)
	if err != nil {
		return BackendVolume{}, err
	}
	return lv.volume(), nil
}

// Delete removes the LV named id. A missing LV, or one the backend did not
// create, is left alone and is not an error.
func (b *LVMBackend) Delete(ctx context.Context, id string) error {
	switch _, err := b.lv(ctx, id); {
	case errors.Is(err, errForeignLV):
		klog.InfoS("not deleting a logical volume untorn did not create", "vg", b.vg, "lv", id)
		return nil
	case errors.Is(err, ErrVolumeNotFound):
		return nil
	case err != nil:
		return err
	}
	if _, err := b.run(ctx, "lvremove", "-y", b.vg+"/"+id); err != nil && !errors.Is(err, ErrVolumeNotFound) {
		return err
	}
	klog.V(4).InfoS("removed logical volume", "vg", b.vg, "lv", id)
	return nil
}

// Expand grows the LV to at least sizeBytes; a larger LV is left as it is.
// It never reports less than asked: a size that cannot be represented is
// ErrOutOfRange, and an LV that lvs shows smaller afterwards an error.
func (b *LVMBackend) Expand(ctx context.Context, id string, sizeBytes int64) (BackendVolume, error) {
	return b.expand(ctx, id, sizeBytes, nil)
}

// expand is Expand onto the physical volumes pvs (any of the VG's when nil).
func (b *LVMBackend) expand(ctx context.Context, id string, sizeBytes int64, pvs []string) (BackendVolume, error) {
	if sizeBytes < 0 {
		return BackendVolume{}, fmt.Errorf("%w: volume size %d must not be negative", ErrOutOfRange, sizeBytes)
	}
	want, err := b.extents(sizeBytes)
	if err != nil {
		return BackendVolume{}, err
	}
	lv, err := b.lv(ctx, id)
	if err != nil {
		return BackendVolume{}, err
	}
	if lv.size >= sizeBytes {
		return lv.volume(), nil
	}
	if _, err := b.run(ctx, "lvextend", append([]string{"-L", strconv.FormatInt(want, 10) + "b", b.vg + "/" + id}, pvs...)...); err != nil {
		return BackendVolume{}, err
	}
	v, err := b.Get(ctx, id)
	if err != nil {
		return BackendVolume{}, err
	}
	if v.SizeBytes < sizeBytes {
		return BackendVolume{}, fmt.Errorf("lvextend left %s/%s at %d bytes, below the %d requested", b.vg, id, v.SizeBytes, sizeBytes)
	}
	return v, nil
}

// List returns the backend's LVs in the VG, sorted by ID.
func (b *LVMBackend) List(ctx context.Context) ([]BackendVolume, error) {
	rows, err := b.lvs(ctx, b.vg)
	if err != nil {
		return nil, err
	}
	vols := []BackendVolume{}
	for _, r := range rows {
		lv, err := parseLV(r)
		if err != nil {
			return nil, err
		}
		if lv.owned {
			vols = append(vols, lv.volume())
		}
	}
	slices.SortFunc(vols, func(a, b BackendVolume) int { return strings.Compare(a.ID, b.ID) })
	return vols, nil
}

// Attach activates the LV when it is not active and returns its
// device-mapper node (/dev/mapper/VG-LV).
func (b *LVMBackend) Attach(ctx context.Context, id string) (string, error) {
	lv, err := b.lv(ctx, id)
	if err != nil {
		return "", err
	}
	if !lv.active {
		if _, err := b.run(ctx, "lvchange", "-ay", b.vg+"/"+id); err != nil {
			return "", err
		}
		if lv, err = b.lv(ctx, id); err != nil {
			return "", err
		}
		if !lv.active {
			return "", fmt.Errorf("logical volume %s/%s is not active after lvchange -ay (attributes %q)", b.vg, id, lv.attr)
		}
	}
	return lv.device(), nil
}

// SetMeta replaces the metadata tags of the given keys and keeps the others.
func (b *LVMBackend) SetMeta(ctx context.Context, id string, meta map[string]string) error {
	lv, err := b.lv(ctx, id)
	if err != nil {
		return err
	}
	var args []string
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		old, ok := lv.meta[k]
		if ok && old == meta[k] || !ok && meta[k] == "" {
			continue
		}
		for _, t := range lv.tagsFor[k] {
			args = append(args, "--deltag", t)
		}
		if meta[k] == "" {
			continue // an empty value removes the key
		}
		add, err := encodeMetaTag(k, meta[k])
		if err != nil {
			return err
		}
		args = append(args, "--addtag", add)
	}
	if len(args) == 0 {
		return nil
	}
	_, err = b.run(ctx, "lvchange", append(args, b.vg+"/"+id)...)
	return err
}

// lvInfo is one parsed lvs row.
type lvInfo struct {
	name, path, dmPath, attr string
	size                     int64
	active, owned            bool
	meta                     map[string]string
	tagsFor                  map[string][]string // metadata key -> its tags as stored
}

func (l lvInfo) device() string {
	if l.dmPath != "" {
		return l.dmPath
	}
	return l.path
}

func (l lvInfo) volume() BackendVolume {
	v := BackendVolume{ID: l.name, SizeBytes: l.size, Meta: maps.Clone(l.meta)}
	if l.active {
		v.Device = l.device()
	}
	return v
}

var (
	// errForeignLV: an LV of that name lacks the owner tag. To callers
	// such an LV is not a volume, so it wraps ErrVolumeNotFound.
	errForeignLV = fmt.Errorf("%w: logical volume exists but was not created by untorn", ErrVolumeNotFound)
	// errLVExists is lvcreate's "already exists" answer.
	errLVExists = errors.New("logical volume already exists")
)

// lv reads one LV; ErrVolumeNotFound when it is missing, its name cannot be
// an LV name, or it is not ours (then errForeignLV).
func (b *LVMBackend) lv(ctx context.Context, id string) (lvInfo, error) {
	if err := ValidateLVName(b.vg, id); err != nil {
		return lvInfo{}, fmt.Errorf("%w: %w", ErrVolumeNotFound, err)
	}
	rows, err := b.lvs(ctx, b.vg+"/"+id)
	if err != nil {
		return lvInfo{}, err
	}
	for _, r := range rows {
		if r.Name != id {
			continue
		}
		lv, err := parseLV(r)
		if err != nil {
			return lvInfo{}, err
		}
		if !lv.owned {
			return lvInfo{}, fmt.Errorf("%w: %s/%s", errForeignLV, b.vg, id)
		}
		return lv, nil
	}
	return lvInfo{}, fmt.Errorf("%w: logical volume %s/%s", ErrVolumeNotFound, b.vg, id)
}
