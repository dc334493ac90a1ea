package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/untorn/untorn/internal/csiclient"
	"golang.org/x/sys/unix"
)

// cmdCSI drives one volume through a CSI plugin the way kubelet and the
// external sidecars would, and prints what the node sees at each step:
// CreateVolume, NodeStageVolume (then statx of a file on the staged
// filesystem), ControllerExpandVolume, NodeExpandVolume (then statfs),
// NodeUnstageVolume, DeleteVolume. Lines are "csi KEY=VALUE ..." for the
// guest test to assert on.
func cmdCSI(endpoint string, args []string) error {
	fs := flag.NewFlagSet("csi", flag.ContinueOnError)
	dir := fs.String("dir", "/tmp/csi-check", "directory for the staging path")
	unit := fs.String("unit", "16Ki", "atomicWriteUnit parameter")
	size := fs.Int64("size", 256<<20, "initial volume size in bytes")
	grow := fs.Int64("expand-to", 512<<20, "size to expand to in bytes")
	c, err := parseAndDial(fs, args, endpoint)
	if err != nil {
		return err
	}
	defer c.Close()
	ctrl, node, ctx := c.Controller, c.Node, c.Ctx
	mount := csiclient.Capability(false, "ext4")
	cv, err := ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name:               "vm-csi-check",
		CapacityRange:      &csi.CapacityRange{RequiredBytes: *size},
		VolumeCapabilities: []*csi.VolumeCapability{mount},
		Parameters:         map[string]string{"fsType": "ext4", "atomicWriteUnit": *unit, "atomicPolicy": "require"},
	})
	if err != nil {
		return fmt.Errorf("CreateVolume: %w", err)
	}
	vol := cv.GetVolume()
	fmt.Printf("csi created=%s capacity=%d\n", vol.GetVolumeId(), vol.GetCapacityBytes())
	staging, probe, st, err := stageAndProbe(ctx, node, vol, mount, *dir, "vm-csi-probe")
	if err != nil {
		return err
	}
	fmt.Printf("csi staged statx supported=%v unit_min=%d unit_max=%d\n", st.Supported, st.UnitMin, st.UnitMax)
	var sf unix.Statfs_t
	if err := unix.Statfs(staging, &sf); err != nil {
		return err
	}
	before := int64(sf.Blocks) * sf.Bsize
	ex, err := ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{
		VolumeId: vol.GetVolumeId(), CapacityRange: &csi.CapacityRange{RequiredBytes: *grow}, VolumeCapability: mount,
	})
	if err != nil {
		return fmt.Errorf("ControllerExpandVolume: %w", err)
	}
	fmt.Printf("csi controller-expanded capacity=%d node_expansion_required=%v\n", ex.GetCapacityBytes(), ex.GetNodeExpansionRequired())
	if ex.GetNodeExpansionRequired() {
		if _, err := node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{
			VolumeId: vol.GetVolumeId(), VolumePath: staging, StagingTargetPath: staging,
			CapacityRange: &csi.CapacityRange{RequiredBytes: *grow}, VolumeCapability: mount,
		}); err != nil {
			return fmt.Errorf("NodeExpandVolume: %w", err)
		}
	}
	if err := unix.Statfs(staging, &sf); err != nil {
		return err
	}
	fmt.Printf("csi filesystem bytes_before=%d bytes_after=%d\n", before, int64(sf.Blocks)*sf.Bsize)
	if err := os.Remove(probe); err != nil {
		return err
	}
	if _, err := node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: vol.GetVolumeId(), StagingTargetPath: staging}); err != nil {
		return fmt.Errorf("NodeUnstageVolume: %w", err)
	}
	if _, err := ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.GetVolumeId()}); err != nil {
		return fmt.Errorf("DeleteVolume: %w", err)
	}
	fmt.Println("csi deleted")
	return nil
}

// parseAndDial parses a command's flags, then dials the plugin for ten
// minutes.
func parseAndDial(fs *flag.FlagSet, args []string, endpoint string) (*csiclient.Client, error) {
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return csiclient.Dial(endpoint, 10*time.Minute)
}

// stageAndProbe stages vol at DIR/staging, creates an empty file named
// probeName on the staged filesystem and reads its atomic limits with
// statx. The probe is left for the caller to remove.
func stageAndProbe(ctx context.Context, node csi.NodeClient, vol *csi.Volume, mount *csi.VolumeCapability, dir, probeName string) (staging, probe string, st statxResult, err error) {
	staging = filepath.Join(dir, "staging")
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return "", "", statxResult{}, err
	}
	if _, err := node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
		VolumeId: vol.GetVolumeId(), StagingTargetPath: staging, VolumeCapability: mount,
		VolumeContext: vol.GetVolumeContext(),
	}); err != nil {
		return "", "", statxResult{}, fmt.Errorf("NodeStageVolume: %w", err)
	}
	probe = filepath.Join(staging, probeName)
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		return "", "", statxResult{}, err
	}
	st, err = statx(probe)
	if err != nil {
		return "", "", statxResult{}, err
	}
	return staging, probe, st, nil
}
