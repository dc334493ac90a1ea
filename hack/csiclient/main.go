// Command csiclient is a small CSI client for the quick start and the
// benchmarks: one CSI call (or a short sequence) per invocation, responses
// printed as JSON.
//
//	csiclient -endpoint unix:///run/untorn/csi.sock create -name vol1 -size 1Gi -param fsType=xfs
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/untorn/untorn/internal/csiclient"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/api/resource"
)

const usage = `usage: csiclient [-endpoint unix:///path/csi.sock] [-timeout 2m] COMMAND [flags]

commands:
  info                                  plugin info, capabilities, node info, probe
  create    -name N [-size Q] [-limit Q] [-block] [-param k=v]...
  delete    -volume-id ID
  list                                  ListVolumes (shows verified atomic limits of staged volumes)
  capacity
  stage     -volume-id ID -staging DIR [-block] [-ro]
  unstage   -volume-id ID -staging DIR
  publish   -volume-id ID -staging DIR -target PATH [-block] [-ro]
  unpublish -volume-id ID -target PATH
  stats     -volume-id ID -path PATH
  health    -volume-id ID [-staging DIR] [-path PATH]
  expand    -volume-id ID -size Q [-path PATH] [-staging DIR] [-block]
  shim      -target DIR                 publish the shim as an inline ephemeral volume
  create-stage -name N -staging DIR [-size Q] [-param k=v]...
                                        CreateVolume then NodeStageVolume on one connection;
                                        prints the volume ID and the time the two calls took
`

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "csiclient:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	g := flag.NewFlagSet("csiclient", flag.ContinueOnError)
	g.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	endpoint := g.String("endpoint", "unix:///run/untorn/csi.sock", "CSI endpoint")
	timeout := g.Duration("timeout", 2*time.Minute, "per-call timeout")
	if err := g.Parse(args); err != nil {
		return err
	}
	if g.NArg() == 0 {
		g.Usage()
		return errors.New("no command")
	}
	cmd, rest := g.Arg(0), g.Args()[1:]

	f := flag.NewFlagSet(cmd, flag.ContinueOnError)
	name := f.String("name", "", "volume name")
	size := f.String("size", "", "capacity (quantity, e.g. 10Gi)")
	limit := f.String("limit", "", "capacity limit (quantity)")
	id := f.String("volume-id", "", "volume ID")
	staging := f.String("staging", "", "staging target path")
	target := f.String("target", "", "publish target path")
	path := f.String("path", "", "volume path")
	block := f.Bool("block", false, "block volume instead of a mounted filesystem")
	ro := f.Bool("ro", false, "read-only")
	ps := csiclient.Params{}
	f.Var(ps, "param", "StorageClass parameter key=value (repeatable)")
	if err := f.Parse(rest); err != nil {
		return err
	}

	c, err := csiclient.Dial(*endpoint, *timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, ids, ctl, node := c.Ctx, c.Identity, c.Controller, c.Node
	vc := csiclient.Capability(*block, "")
	bytes := func(q string) (int64, error) {
		if q == "" {
			return 0, nil
		}
		v, err := resource.ParseQuantity(q)
		if err != nil {
			return 0, fmt.Errorf("size %q: %w", q, err)
		}
		return v.Value(), nil
	}

	switch cmd {
	case "info":
		for _, call := range []func() (proto.Message, error){
			func() (proto.Message, error) { return ids.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{}) },
			func() (proto.Message, error) {
				return ids.GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{})
			},
			func() (proto.Message, error) { return ids.Probe(ctx, &csi.ProbeRequest{}) },
			func() (proto.Message, error) { return node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{}) },
		} {
			if err := show(call()); err != nil {
				return err
			}
		}
		return nil
	case "create":
		req, err := bytes(*size)
		if err != nil {
			return err
		}
		lim, err := bytes(*limit)
		if err != nil {
			return err
		}
		return show(ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{
			Name: *name, Parameters: ps, VolumeCapabilities: []*csi.VolumeCapability{vc},
			CapacityRange: &csi.CapacityRange{RequiredBytes: req, LimitBytes: lim},
		}))
	case "delete":
		return show(ctl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: *id}))
	case "list":
		return show(ctl.ListVolumes(ctx, &csi.ListVolumesRequest{}))
	case "capacity":
		return show(ctl.GetCapacity(ctx, &csi.GetCapacityRequest{}))
	case "stage":
		if *ro {
			vc.AccessMode.Mode = csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
		}
		return show(node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: *id, StagingTargetPath: *staging, VolumeCapability: vc}))
	case "unstage":
		return show(node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: *id, StagingTargetPath: *staging}))
	case "publish":
		return show(node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: *id, StagingTargetPath: *staging,
			TargetPath: *target, VolumeCapability: vc, Readonly: *ro}))
	case "unpublish":
		return show(node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: *id, TargetPath: *target}))
	case "stats":
		return show(node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: *id, VolumePath: *path, StagingTargetPath: *staging}))
	case "health":
		return show(node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: *id, VolumePublishPath: *path, StagingTargetPath: *staging}))
	case "expand":
		req, err := bytes(*size)
		if err != nil {
			return err
		}
		cr := &csi.CapacityRange{RequiredBytes: req}
		resp, err := ctl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: *id, CapacityRange: cr, VolumeCapability: vc})
		if err := show(resp, err); err != nil {
			return err
		}
		if !resp.GetNodeExpansionRequired() {
			return nil
		}
		return show(node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: *id, VolumePath: *path,
			StagingTargetPath: *staging, CapacityRange: cr, VolumeCapability: vc}))
	case "create-stage":
		req, err := bytes(*size)
		if err != nil {
			return err
		}
		start := time.Now()
		vol, err := ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{
			Name: *name, Parameters: ps, VolumeCapabilities: []*csi.VolumeCapability{vc},
			CapacityRange: &csi.CapacityRange{RequiredBytes: req},
		})
		if err != nil {
			return err
		}
		id := vol.GetVolume().GetVolumeId()
		if _, err := node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: *staging, VolumeCapability: vc}); err != nil {
			return fmt.Errorf("stage %s: %w", id, err)
		}
		fmt.Printf("{\"volumeId\": %q, \"elapsedNs\": %d}\n", id, time.Since(start).Nanoseconds())
		return nil
	case "shim":
		return show(node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "csi-shim-" + fmt.Sprint(os.Getpid()),
			TargetPath: *target, VolumeCapability: vc, Readonly: true,
			VolumeContext: map[string]string{"csi.storage.k8s.io/ephemeral": "true", "type": "shim"}}))
	}
	g.Usage()
	return fmt.Errorf("unknown command %q", cmd)
}

func show(m proto.Message, err error) error {
	if err != nil {
		return err
	}
	b, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}
