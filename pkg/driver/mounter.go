package driver

import mount "k8s.io/mount-utils"

// Mounter is what the driver uses of a k8s.io/mount-utils mounter
// (mount.New, or mount.SafeFormatAndMount around it). Formatting is not
// among it: staging runs wipefs, blkid, mkfs and fsck itself (see
// prepareAndMount), so tests see every command and every mount with its
// options.
type Mounter interface {
	// Mount mounts source at target with fstype ("" for a bind mount) and
	// options.
	Mount(source, target, fstype string, options []string) error
	Unmount(target string) error
	// IsMountPoint reports whether file is a mount point.
	IsMountPoint(file string) (bool, error)
	// List lists the mount points of this mount namespace.
	List() ([]mount.MountPoint, error)
}
