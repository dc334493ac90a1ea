package driver

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// TestStageFormatOptions stages blank volumes on the sysfs fixtures' devices
// and checks the exact mkfs argument vector and mount call: the planner's
// options (ext4 bigalloc with the cluster it chose, XFS reflink and a
// one-block copy-on-write extent size hint) reach mkfs, and the plan's and
// the capability's mount options reach the mount.
func TestStageFormatOptions(t *testing.T) {
	tests := []struct {
		name   string
		dev    string // a device of fixtureSysfs
		params map[string]string
		flags  []string // the capability's mount flags
		mkfs   []string
		mount  []string
	}{
		{"ext4 16Ki on nvme 4Ki..64Ki: bigalloc with 64Ki clusters", "/dev/nvme0n1",
			map[string]string{"fsType": "ext4", "atomicWriteUnit": "16Ki"}, []string{"noatime"},
			[]string{"mkfs.ext4", "-b", "4096", "-O", "bigalloc", "-C", "65536", "-F", "-m0", "/dev/nvme0n1"},
			[]string{"noatime", "defaults"}},
		{"ext4 16Ki with clusterSize 16Ki", "/dev/nvme0n1",
			map[string]string{"fsType": "ext4", "atomicWriteUnit": "16Ki", "clusterSize": "16Ki"}, nil,
			[]string{"mkfs.ext4", "-b", "4096", "-O", "bigalloc", "-C", "16384", "-F", "-m0", "/dev/nvme0n1"},
			[]string{"defaults"}},
		{"ext4 8Ki on nvme 512B..16Ki: clusters of the hardware max", "/dev/nvme1n1",
			map[string]string{"fsType": "ext4", "atomicWriteUnit": "8Ki"}, nil,
			[]string{"mkfs.ext4", "-b", "4096", "-O", "bigalloc", "-C", "16384", "-F", "-m0", "/dev/nvme1n1"},
			[]string{"defaults"}},
		{"ext4 4Ki: no bigalloc needed", "/dev/nvme0n1",
			map[string]string{"fsType": "ext4", "atomicWriteUnit": "4Ki"}, nil,
			[]string{"mkfs.ext4", "-b", "4096", "-F", "-m0", "/dev/nvme0n1"},
			[]string{"defaults"}},
		{"ext4 prefer without hardware: plain format", "/dev/loop0",
			map[string]string{"fsType": "ext4", "atomicPolicy": "prefer"}, nil,
			[]string{"mkfs.ext4", "-b", "4096", "-F", "-m0", "/dev/loop0"},
			[]string{"defaults"}},
		{"xfs 16Ki hardware on nvme", "/dev/nvme0n1",
			map[string]string{"fsType": "xfs", "atomicSource": "hardware"}, []string{"nodiscard"},
			[]string{"mkfs.xfs", "-b", "size=4096", "-m", "reflink=1", "-d", "cowextsize=1", "-f", "/dev/nvme0n1"},
			[]string{"nodiscard", "defaults"}},
		{"xfs 1Mi in software on a loop device", "/dev/loop0",
			map[string]string{"fsType": "xfs", "atomicWriteUnit": "1Mi"}, nil,
			[]string{"mkfs.xfs", "-b", "size=4096", "-m", "reflink=1", "-d", "cowextsize=1", "-f", "/dev/loop0"},
			[]string{"defaults"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newFakeDriver(t)
			m := &modelAtomic{sysfs: fixtureSysfs(t)}
			e.d.atomic = m
			if tc.params["fsType"] == "xfs" {
				e.d.atomic = xfsModel{m}
			}
			e.backend.device = tc.dev
			id := createVol(t, e, tc.params)
			staging := filepath.Join(e.dir, "staging")
			argv := scriptFormat(e)
			_, err := e.d.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging,
				VolumeCapability: &csi.VolumeCapability{
					AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: tc.flags}},
					AccessMode: &csi.VolumeCapability_AccessMode{Mode: snw}}})
			if err != nil {
				t.Fatal(err)
			}
			want := [][]string{{"wipefs", "-a", tc.dev}, tc.mkfs}
			if !slices.EqualFunc(*argv, want, slices.Equal) {
				t.Errorf("commands\n%q, want\n%q", *argv, want)
			}
			wantMount := []mountCall{{tc.dev, staging, tc.params["fsType"], tc.mount}}
			if !slices.EqualFunc(e.mounts.calls, wantMount, sameMountCall) {
				t.Errorf("mounts %+v, want %+v", e.mounts.calls, wantMount)
			}
		})
	}
}

func sameMountCall(a, b mountCall) bool {
	return a.source == b.source && a.target == b.target && a.fstype == b.fstype && slices.Equal(a.options, b.options)
}

// TestRestageWritesNoMetadata: staging again with the same verified result
// leaves the backend metadata alone (on LVM each write is an lvchange);
// a different result is written.
func TestRestageWritesNoMetadata(t *testing.T) {
	e := newFakeDriver(t)
	ctx := context.Background()
	e.atomic.verify = untorn.Verification{Atomic: true, UnitMin: 4096, UnitMax: 1 << 20, Unit: 16384}
	id := createVol(t, e, map[string]string{"fsType": "xfs"})
	staging := filepath.Join(e.dir, "staging")
	req := &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: mountCap(snw, "")}
	restage := func() int {
		t.Helper()
		if _, err := e.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
			t.Fatal(err)
		}
		scriptRun(e, step{stdout: "TYPE=xfs\n"}) // blkid finds the volume's filesystem
		before := e.backend.setMetas
		if _, err := e.d.NodeStageVolume(ctx, req); err != nil {
			t.Fatal(err)
		}
		return e.backend.setMetas - before
	}
	scriptFormat(e)
	if _, err := e.d.NodeStageVolume(ctx, req); err != nil {
		t.Fatal(err)
	}
	if n := restage(); n != 0 {
		t.Errorf("restaging with the same result wrote the backend metadata %d times", n)
	}
	e.atomic.verify.UnitMax = 2 << 20
	if n := restage(); n != 1 {
		t.Errorf("restaging with a new result wrote the backend metadata %d times, want 1", n)
	}
	vol, _ := e.backend.Get(ctx, id)
	if vol.Meta[metaVerifiedUnitMax] != "2097152" {
		t.Errorf("verified unit max %q, want 2097152", vol.Meta[metaVerifiedUnitMax])
	}
}
