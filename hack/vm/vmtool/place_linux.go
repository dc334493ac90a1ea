package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/untorn/untorn/internal/csiclient"
	"google.golang.org/grpc/status"
)

// cmdPlace asks a CSI plugin where a class's volume goes, as the scheduler
// and csi-provisioner would: NodeGetInfo's topology, GetCapacity with the
// class's parameters, then CreateVolume; a created volume is staged, its
// staged filesystem's atomic limits read with statx, unstaged, and kept for
// the test to inspect (vmtool csi-delete removes it). Lines are
// "place KEY=VALUE ...".
func cmdPlace(endpoint string, args []string) error {
	fs := flag.NewFlagSet("csi-place", flag.ContinueOnError)
	name := fs.String("name", "vm-place", "volume name")
	size := fs.Int64("size", 256<<20, "volume size in bytes")
	dir := fs.String("dir", "/tmp/csi-place", "directory for the staging path")
	p := csiclient.Params{}
	fs.Var(p, "param", "StorageClass parameter KEY=VALUE (repeatable)")
	c, err := parseAndDial(fs, args, endpoint)
	if err != nil {
		return err
	}
	defer c.Close()
	ctrl, node, ctx := c.Controller, c.Node, c.Ctx

	info, err := node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil {
		return fmt.Errorf("NodeGetInfo: %w", err)
	}
	segs := info.GetAccessibleTopology().GetSegments()
	keys := make([]string, 0, len(segs))
	for k := range segs {
		keys = append(keys, k+"="+segs[k])
	}
	sort.Strings(keys)
	fmt.Printf("place topology %s\n", strings.Join(keys, " "))

	capacity, err := ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: p, AccessibleTopology: info.GetAccessibleTopology()})
	if err != nil {
		return fmt.Errorf("GetCapacity: %w", err)
	}
	fmt.Printf("place capacity=%d\n", capacity.GetAvailableCapacity())

	mount := csiclient.Capability(false, "")
	cv, err := ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name: *name, CapacityRange: &csi.CapacityRange{RequiredBytes: *size},
		VolumeCapabilities: []*csi.VolumeCapability{mount}, Parameters: p,
		AccessibilityRequirements: &csi.TopologyRequirement{Requisite: []*csi.Topology{info.GetAccessibleTopology()}},
	})
	if err != nil {
		st := status.Convert(err)
		fmt.Printf("place create code=%s\n", st.Code())
		fmt.Printf("place message %s\n", st.Message())
		return nil
	}
	vol := cv.GetVolume()
	fmt.Printf("place create code=OK id=%s\n", vol.GetVolumeId())
	staging, probe, st, err := stageAndProbe(ctx, node, vol, mount, *dir, "vm-place-probe")
	if err != nil {
		return err
	}
	fmt.Printf("place staged statx supported=%v unit_min=%d unit_max=%d\n", st.Supported, st.UnitMin, st.UnitMax)
	if err := os.Remove(probe); err != nil {
		return err
	}
	if _, err := node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: vol.GetVolumeId(), StagingTargetPath: staging}); err != nil {
		return fmt.Errorf("NodeUnstageVolume: %w", err)
	}
	return nil
}

// cmdDelete deletes a volume through the plugin.
func cmdDelete(endpoint string, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("csi-delete SOCKET VOLUME_ID")
	}
	c, err := csiclient.Dial(endpoint, 5*time.Minute)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Controller.DeleteVolume(c.Ctx, &csi.DeleteVolumeRequest{VolumeId: args[0]})
	return err
}
