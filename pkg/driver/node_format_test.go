package driver

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestStageFormatState stages a volume in each format state against what
// blkid finds on its device: only a blank volume (or, for a volume from an
// earlier version with no state, a device that is truly blank) is formatted;
// a formatted volume is only mounted; anything else is refused with what
// was found, and nothing but blkid runs on a device that is refused.
func TestStageFormatState(t *testing.T) {
	const dev = "DEV" // replaced by the device file's path
	xfsMkfs := []string{"mkfs.xfs", "-b", "size=4096", "-m", "reflink=1", "-d", "cowextsize=1", "-f", dev}
	blkid := []string{"blkid", "-p", "-s", "TYPE", "-s", "PTTYPE", "-s", "LABEL", "-o", "export", dev}
	tests := []struct {
		name     string
		fsType   string
		state    string // "-" removes the key (a volume from an earlier version)
		data     bool   // the first MiB of the device holds bytes without a signature
		readOnly bool
		steps    []step
		want     codes.Code
		wantCmds [][]string
		found    string // what the refusal must name
		endState string
	}{
		{name: "blank is wiped and formatted", fsType: "xfs", state: formatBlank, steps: []step{{}, {}},
			want: codes.OK, wantCmds: [][]string{{"wipefs", "-a", dev}, xfsMkfs}, endState: formatFormatted},
		{name: "blank with leftovers of a killed mkfs", fsType: "xfs", state: formatBlank, data: true, steps: []step{{}, {}},
			want: codes.OK, wantCmds: [][]string{{"wipefs", "-a", dev}, xfsMkfs}, endState: formatFormatted},
		{name: "blank read-only is refused", fsType: "xfs", state: formatBlank, readOnly: true,
			want: codes.FailedPrecondition, endState: formatBlank},
		{name: "formatted xfs is mounted only", fsType: "xfs", state: formatFormatted, steps: []step{{stdout: "TYPE=xfs\n"}},
			want: codes.OK, wantCmds: [][]string{blkid}, endState: formatFormatted},
		{name: "formatted ext4 is checked and mounted", fsType: "ext4", state: formatFormatted, steps: []step{{stdout: "TYPE=ext4\n"}, {}},
			want: codes.OK, wantCmds: [][]string{blkid, {"fsck", "-a", dev}}, endState: formatFormatted},
		{name: "formatted holding a foreign ext4", fsType: "xfs", state: formatFormatted, steps: []step{{stdout: "LABEL=x\nTYPE=ext4\n"}},
			want: codes.FailedPrecondition, wantCmds: [][]string{blkid}, found: "ext4 filesystem (label x)", endState: formatFormatted},
		{name: "formatted ext4 volume holding xfs: no fsck", fsType: "ext4", state: formatFormatted, steps: []step{{stdout: "TYPE=xfs\n"}},
			want: codes.FailedPrecondition, wantCmds: [][]string{blkid}, found: "xfs filesystem", endState: formatFormatted},
		{name: "formatted holding a partition table", fsType: "xfs", state: formatFormatted, steps: []step{{stdout: "PTTYPE=gpt\n"}},
			want: codes.FailedPrecondition, wantCmds: [][]string{blkid}, found: "gpt partition table", endState: formatFormatted},
		{name: "formatted holding data without a signature", fsType: "xfs", state: formatFormatted, data: true, steps: []step{{status: 2}},
			want: codes.FailedPrecondition, wantCmds: [][]string{blkid}, found: "no signature", endState: formatFormatted},
		{name: "formatted whose superblock is gone", fsType: "xfs", state: formatFormatted, steps: []step{{status: 2}},
			want: codes.FailedPrecondition, wantCmds: [][]string{blkid}, endState: formatFormatted},
		{name: "no state, truly blank", fsType: "xfs", state: "-", steps: []step{{status: 2}, {}},
			want: codes.OK, wantCmds: [][]string{blkid, xfsMkfs}, endState: formatFormatted},
		{name: "no state, data without a signature", fsType: "xfs", state: "-", data: true, steps: []step{{status: 2}},
			want: codes.FailedPrecondition, wantCmds: [][]string{blkid}, found: "without a signature"},
		{name: "no state, foreign filesystem", fsType: "xfs", state: "-", steps: []step{{stdout: "TYPE=btrfs\n"}},
			want: codes.FailedPrecondition, wantCmds: [][]string{blkid}, found: "btrfs"},
		{name: "no state, its own type", fsType: "xfs", state: "-", steps: []step{{stdout: "TYPE=xfs\n"}},
			want: codes.OK, wantCmds: [][]string{blkid}},
		{name: "used raw, blank device", fsType: "xfs", state: formatRaw, steps: []step{{status: 2}},
			want: codes.FailedPrecondition, wantCmds: [][]string{blkid}, endState: formatRaw},
		{name: "unknown state", fsType: "xfs", state: "half", want: codes.FailedPrecondition, endState: "half"},
		{name: "blkid fails", fsType: "xfs", state: formatFormatted, steps: []step{{status: 4}},
			want: codes.Internal, wantCmds: [][]string{blkid}, endState: formatFormatted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newFakeDriver(t)
			e.atomic.verify.Atomic, e.atomic.verify.UnitMax = true, 1<<20
			policy := "require"
			if tc.fsType == "ext4" {
				policy = "prefer" // no hardware atomic writes in the fake
			}
			id := createVol(t, e, map[string]string{"fsType": tc.fsType, "atomicPolicy": policy})
			devFile := filepath.Join(e.dir, "dev.img")
			img := make([]byte, 4<<20)
			if tc.data {
				copy(img[512:], "a database page that no blkid probe knows")
			}
			if err := os.WriteFile(devFile, img, 0o600); err != nil {
				t.Fatal(err)
			}
			e.backend.device = devFile
			state := tc.state
			if state == "-" {
				state = ""
			}
			if err := e.backend.SetMeta(context.Background(), id, map[string]string{metaFormatState: state}); err != nil {
				t.Fatal(err)
			}
			argv := scriptRun(e, tc.steps...)
			mode := snw
			if tc.readOnly {
				mode = csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
			}
			staging := filepath.Join(e.dir, "staging")
			_, err := e.d.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: mountCap(mode, "")})
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code %v, want %v (%v)", got, tc.want, err)
			}
			var want [][]string
			for _, c := range tc.wantCmds {
				c = slices.Clone(c)
				if i := slices.Index(c, dev); i >= 0 {
					c[i] = devFile
				}
				want = append(want, c)
			}
			if !slices.EqualFunc(*argv, want, slices.Equal) {
				t.Errorf("commands %q, want %q", *argv, want)
			}
			if tc.found != "" && !strings.Contains(status.Convert(err).Message(), tc.found) {
				t.Errorf("refusal %q does not say what was found (%s)", status.Convert(err).Message(), tc.found)
			}
			mounted, _ := e.mounter.IsMountPoint(staging)
			if mounted != (tc.want == codes.OK) {
				t.Errorf("mounted %v after code %v", mounted, tc.want)
			}
			vol, _ := e.backend.Get(context.Background(), id)
			if got := vol.Meta[metaFormatState]; got != tc.endState {
				t.Errorf("format state %q, want %q", got, tc.endState)
			}
		})
	}
}

// TestCreateMarksBlankAndBlockMarksRaw: a new volume is blank; staging it
// as a raw block device marks it raw, after which a mount staging never
// formats it.
func TestCreateMarksBlankAndBlockMarksRaw(t *testing.T) {
	e := newFakeDriver(t)
	ctx := context.Background()
	id := createVol(t, e, map[string]string{"fsType": "xfs", "atomicPolicy": "prefer"})
	vol, _ := e.backend.Get(ctx, id)
	if vol.Meta[metaFormatState] != formatBlank {
		t.Fatalf("new volume's format state %q, want %q", vol.Meta[metaFormatState], formatBlank)
	}
	staging := filepath.Join(e.dir, "block-staging")
	if _, err := e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: blockCap(snw)}); err != nil {
		t.Fatal(err)
	}
	vol, _ = e.backend.Get(ctx, id)
	if vol.Meta[metaFormatState] != formatRaw {
		t.Fatalf("format state after block staging %q, want %q", vol.Meta[metaFormatState], formatRaw)
	}
	if _, err := e.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}
	argv := scriptRun(e, step{status: 2})
	_, err := e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: filepath.Join(e.dir, "s"), VolumeCapability: mountCap(snw, "")})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("code %v, want FailedPrecondition (%v)", status.Code(err), err)
	}
	if len(*argv) != 1 || (*argv)[0][0] != "blkid" {
		t.Errorf("commands %q, want blkid only", *argv)
	}
}
