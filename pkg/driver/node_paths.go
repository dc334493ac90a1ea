package driver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	mount "k8s.io/mount-utils"
)

// pathKind says what a node path must be when it exists.
type pathKind int

const (
	// pathDir: a mount volume's staging or target path, a directory.
	pathDir pathKind = iota
	// pathFile: a block volume's target path, a regular file.
	pathFile
	// pathAny: a path the driver only unmounts or reads (unstage,
	// unpublish, stats) or does not touch (a block volume's staging path).
	pathAny
)

// nodePath validates a path from a node request and returns it cleaned.
// It refuses (InvalidArgument) a path with a ".." element, a path equal
// to, inside or containing one of the driver's own directories, a path
// whose existing parent chain resolves elsewhere through a symlink, a leaf
// that is a symlink, and a leaf of the wrong type.
func (d *Driver) nodePath(field, p string, kind pathKind) (string, error) {
	if err := checkPath(field, p); err != nil {
		return "", err
	}
	if slices.Contains(strings.Split(p, "/"), "..") {
		return "", fmt.Errorf("%w: %s %q must not contain \"..\"", ErrInvalidArgument, field, p)
	}
	c := filepath.Clean(p)
	if err := d.checkOwnDirs(field, c); err != nil {
		return "", err
	}
	// The deepest existing ancestor must be reached without a symlink.
	anc := filepath.Dir(c)
	for {
		fi, err := os.Lstat(anc)
		if err == nil {
			if !fi.IsDir() && fi.Mode()&os.ModeSymlink == 0 {
				return "", fmt.Errorf("%w: %s %s: %s is not a directory", ErrInvalidArgument, field, c, anc)
			}
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%w: %s %s: %v", ErrInvalidArgument, field, c, err)
		}
		anc = filepath.Dir(anc)
	}
	if r, err := filepath.EvalSymlinks(anc); err != nil || r != anc {
		return "", fmt.Errorf("%w: %s %s: its parent %s resolves to %q through a symlink; symlinked paths are not followed",
			ErrInvalidArgument, field, c, anc, r)
	}
	fi, err := os.Lstat(c)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return "", fmt.Errorf("%w: %s %s: %v", ErrInvalidArgument, field, c, err)
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return "", fmt.Errorf("%w: %s %s is a symlink; symlinked paths are not followed", ErrInvalidArgument, field, c)
	case kind == pathDir && !fi.IsDir():
		return "", fmt.Errorf("%w: %s %s exists and is not a directory (a mount volume needs a directory)", ErrInvalidArgument, field, c)
	case kind == pathFile && !fi.Mode().IsRegular() && fi.Mode()&os.ModeDevice == 0:
		// A device node is what a published block target shows.
		return "", fmt.Errorf("%w: %s %s exists and is not a regular file (a block volume is published at a file)", ErrInvalidArgument, field, c)
	}
	return c, nil
}

// ownDir is one of the driver's own directories; inside says whether paths
// below it are the driver's too (the socket's directory may be shared).
type ownDir struct {
	name, path string
	inside     bool
}

func (d *Driver) ownDirs() []ownDir {
	dirs := []ownDir{{"--state-dir", d.opts.StateDir, true}, {"--shim-dir", d.opts.ShimDir, true}}
	if d.opts.Backend == "loop" {
		dirs = append(dirs, ownDir{"--loop-dir", d.opts.LoopDir, true})
	}
	if sock, err := SocketPath(d.opts.Endpoint); err == nil {
		dirs = append(dirs, ownDir{"the CSI socket", sock, false}, ownDir{"the CSI socket's directory", filepath.Dir(sock), false})
	}
	return dirs
}

// checkOwnDirs refuses a path equal to, inside or containing one of the
// driver's own directories (also after resolving their symlinks).
func (d *Driver) checkOwnDirs(field, p string) error {
	for _, o := range d.ownDirs() {
		if o.path == "" {
			continue
		}
		for _, dir := range []string{filepath.Clean(o.path), resolve(o.path)} {
			if p == dir || (o.inside && within(p, dir)) || within(dir, p) {
				return fmt.Errorf("%w: %s %s overlaps the driver's own directory %s (%s)", ErrInvalidArgument, field, p, dir, o.name)
			}
		}
	}
	return nil
}

// mountsOf lists the mount points of a device (symlinks such as
// /dev/vg/lv and /dev/mapper/vg-lv resolved), except the paths in exclude.
func (d *Driver) mountsOf(dev string, exclude ...string) ([]string, error) {
	mps, err := d.mounter.List()
	if err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	want := resolve(dev)
	var out []string
	for _, mp := range mps {
		if resolve(mp.Device) != want || slices.Contains(exclude, mp.Path) {
			continue
		}
		out = append(out, mp.Path)
	}
	return out, nil
}

func resolve(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

// within reports whether p lies strictly below dir (both clean).
func within(p, dir string) bool {
	if dir == "/" {
		return p != "/"
	}
	return strings.HasPrefix(p, dir+"/")
}

// overlaps reports whether a and b are the same path or one contains the other.
func overlaps(a, b string) bool { return a == b || within(a, b) || within(b, a) }

// claimedByOther refuses a path that is, lies inside or contains a staging
// or target path recorded for another volume.
func (d *Driver) claimedByOther(id, field, p string) error {
	recs, err := d.state.list()
	if err != nil {
		return fmt.Errorf("read node state: %w", err)
	}
	for _, r := range recs {
		if r.VolumeID == id {
			continue
		}
		for _, q := range append([]string{r.StagingPath}, r.Targets...) {
			if q != "" && overlaps(p, q) {
				return fmt.Errorf("%w: %s %s overlaps %s, a path of volume %s", ErrInvalidArgument, field, p, q, r.VolumeID)
			}
		}
	}
	return nil
}

// mountAt returns the topmost mount at p, or nil when p is no mount point
// (or does not exist).
func (d *Driver) mountAt(p string) (*mount.MountPoint, error) {
	mounted, err := d.mounter.IsMountPoint(p)
	if errors.Is(err, os.ErrNotExist) || (err == nil && !mounted) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("check mount at %s: %w", p, err)
	}
	mps, err := d.mounter.List()
	if err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	for i := len(mps) - 1; i >= 0; i-- {
		if mps[i].Path == p {
			mp := mps[i]
			return &mp, nil
		}
	}
	return &mount.MountPoint{Path: p}, nil
}

// fromSource reports whether the mount mp comes from src: a block device
// (a filesystem on it, or the device node bound onto a file) or a directory
// bound onto mp.Path.
func fromSource(mp *mount.MountPoint, src string) bool {
	if src == "" {
		return false
	}
	if mp.Device != "" && resolve(mp.Device) == resolve(src) {
		return true
	}
	return sameNode(mp.Path, src)
}

// mkdirNoFollow creates directory p and its missing parents one at a time,
// refusing to go through a symlink that appears meanwhile.
func mkdirNoFollow(field, p string) error {
	var missing []string
	for q := p; ; q = filepath.Dir(q) {
		if _, err := os.Lstat(q); err == nil || q == "/" {
			break
		}
		missing = append(missing, q)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		q := missing[i]
		if err := os.Mkdir(q, 0o750); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create %s %s: %w", field, q, err)
		}
		if fi, err := os.Lstat(q); err != nil || !fi.IsDir() {
			return fmt.Errorf("%w: %s %s: %s is not a directory", ErrInvalidArgument, field, p, q)
		}
	}
	if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: %s %s is not a directory", ErrInvalidArgument, field, p)
	}
	return nil
}

// makeFileNoFollow creates an empty file (a block volume's target) and its
// parents without following a symlink at the leaf.
func makeFileNoFollow(field, p string) error {
	if err := mkdirNoFollow(field+" parent", filepath.Dir(p)); err != nil {
		return err
	}
	if fi, err := os.Lstat(p); err == nil {
		if fi.Mode().IsRegular() || fi.Mode()&os.ModeDevice != 0 {
			return nil // created before, or already holding the device
		}
		return fmt.Errorf("%w: %s %s is not a regular file", ErrInvalidArgument, field, p)
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_RDONLY|noFollow, 0o640)
	if err != nil {
		return fmt.Errorf("%w: create %s %s: %v", ErrInvalidArgument, field, p, err)
	}
	return f.Close()
}

// stagedAt refuses (InvalidArgument) a staging_target_path, already
// canonical, that is not where volume id is staged.
func stagedAt(id, staging string, st stagedVolume) error {
	if staging == st.StagingPath {
		return nil
	}
	return fmt.Errorf("%w: staging_target_path %s is not where volume %s is staged (%s)", ErrInvalidArgument, staging, id, st.StagingPath)
}
