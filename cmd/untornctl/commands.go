package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// probeResult is probe's JSON output.
type probeResult struct {
	untorn.DeviceLimits
	HardwareAtomic    bool           `json:"hardwareAtomic"`
	RequiredAlignment uint64         `json:"requiredAlignment"`
	Aligned           bool           `json:"aligned"`
	Recommendation    recommendation `json:"recommendation"`
}

type recommendation struct {
	FSType      untorn.FSType `json:"fsType,omitempty"` // "" = none
	ClusterSize uint64        `json:"clusterSize,omitempty"`
	UnitMin     uint64        `json:"atomicUnitMin,omitempty"`
	UnitMax     uint64        `json:"atomicUnitMax,omitempty"`
	Hardware    bool          `json:"hardware"`
	Text        string        `json:"text"`
}

func (c cli) probe(args []string) (int, error) {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	root := fs.String("sysfs-root", "", "look the device up by name under this sysfs tree")
	asJSON := fs.Bool("json", false, "print JSON")
	dev, err := parse(fs, args, "DEVICE")
	if err != nil {
		return 0, err
	}
	d, err := sysfs(*root).Probe(dev)
	if err != nil {
		return 0, err
	}
	r := probeResult{DeviceLimits: d, HardwareAtomic: d.HardwareAtomic(),
		RequiredAlignment: d.RequiredAlignment(), Aligned: d.AlignedTo(d.RequiredAlignment()),
		Recommendation: recommend(d)}
	if *asJSON {
		return exitOK, c.json(r)
	}
	c.printf("device:     %s (%s", dev, d.Name)
	if d.Partition {
		c.printf(", partition of %s starting at sector %d", d.Disk, d.StartSector)
	}
	if len(d.Slaves) > 0 {
		c.printf(", on %s", strings.Join(d.Slaves, " "))
	}
	c.printf(")\nsize:       %d bytes, logical block %d, physical block %d\n", d.SizeBytes, d.LogicalBlockSize, d.PhysicalBlockSize)
	if d.UnitMax == 0 {
		c.printf("atomic:     none (no hardware atomic writes advertised)\n")
	} else {
		c.printf("atomic:     unit %s..%s, max bytes %s, boundary %s\n", size(d.UnitMin), size(d.UnitMax), size(d.MaxBytes), size(d.Boundary))
	}
	if d.Partition && d.UnitMax != 0 {
		state := "aligned"
		if !r.Aligned {
			state = "MISALIGNED: the kernel disables atomic writes on this partition"
		}
		c.printf("alignment:  start %d bytes vs required %s: %s\n", d.StartBytes(), size(r.RequiredAlignment), state)
	}
	c.printf("recommend:  %s\n", r.Recommendation.Text)
	return exitOK, nil
}

// recommend picks the best atomic format for a device.
func recommend(d untorn.DeviceLimits) recommendation {
	if d.HardwareAtomic() && d.LogicalBlockSize <= untorn.BlockSize {
		// The largest unit (cluster) the device allows, capped as the
		// planner caps its default cluster.
		lo := max(uint64(untorn.BlockSize), d.UnitMin)
		for u := max(lo, min(floorPow2(d.UnitMax), untorn.DefaultClusterCap)); u >= lo; u /= 2 {
			req := untorn.PlanRequest{FSType: untorn.FSExt4, Unit: u, Policy: untorn.PolicyRequire}
			p, err := untorn.PlanFormat(d, req, d.Device)
			if err != nil {
				continue
			}
			r := recommendation{FSType: untorn.FSExt4, ClusterSize: p.ClusterSize, UnitMin: p.AtomicUnitMin, UnitMax: p.AtomicUnitMax, Hardware: true}
			if p.ClusterSize != 0 {
				r.Text = fmt.Sprintf("ext4 bigalloc with cluster %s (hardware atomic writes %s..%s): %s %s",
					size(p.ClusterSize), size(p.AtomicUnitMin), size(p.AtomicUnitMax), p.MkfsProgram, strings.Join(p.MkfsArgs, " "))
			} else {
				r.Text = fmt.Sprintf("ext4 (hardware atomic writes of %s): %s %s", size(p.AtomicUnitMin), p.MkfsProgram, strings.Join(p.MkfsArgs, " "))
				if d.Partition && u < floorPow2(d.UnitMax) {
					r.Text += fmt.Sprintf(" (the partition start is aligned to %s only; realign it to 1 MiB for ext4 bigalloc up to %s)",
						size(u), size(min(floorPow2(d.UnitMax), untorn.DefaultClusterCap)))
				}
			}
			return r
		}
	}
	if d.UnitMax != 0 && !d.AlignedTo(d.RequiredAlignment()) {
		return recommendation{FSType: untorn.FSXFS, UnitMin: untorn.BlockSize, UnitMax: untorn.XFSDefaultAtomicMax,
			Text: "xfs (software atomic writes; the partition is misaligned for hardware atomic writes — realign it to use ext4 bigalloc)"}
	}
	return recommendation{FSType: untorn.FSXFS, UnitMin: untorn.BlockSize, UnitMax: untorn.XFSDefaultAtomicMax,
		Text: "xfs (software atomic writes via copy-on-write; Linux 6.16+). No hardware atomic writes, so ext4 cannot give atomic writes here"}
}

func (c cli) plan(args []string) (int, error) {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	root := fs.String("sysfs-root", "", "look the device up by name under this sysfs tree")
	fsType := fs.String("fs", "", "filesystem: ext4 or xfs")
	unitS := fs.String("unit", "", "required atomic write unit (e.g. 16Ki)")
	clusterS := fs.String("cluster", "", "ext4 bigalloc cluster size override")
	policy := fs.String("policy", "require", "require or prefer")
	asJSON := fs.Bool("json", false, "print JSON")
	dev, err := parse(fs, args, "DEVICE")
	if err != nil {
		return 0, err
	}
	if *fsType == "" || *unitS == "" {
		return 0, fmt.Errorf("%w: plan needs --fs and --unit", errUsage)
	}
	var req untorn.PlanRequest
	if req.FSType, err = untorn.ParseFSType(*fsType); err != nil {
		return 0, fmt.Errorf("%w: --fs: %v", errUsage, err)
	}
	if req.Policy, err = untorn.ParsePolicy(*policy); err != nil {
		return 0, fmt.Errorf("%w: --policy: %v", errUsage, err)
	}
	if req.Unit, err = sizeFlag("unit", *unitS); err != nil {
		return 0, err
	}
	if req.Cluster, err = sizeFlag("cluster", *clusterS); err != nil {
		return 0, err
	}
	d, err := sysfs(*root).Probe(dev)
	if err != nil {
		return 0, err
	}
	p, err := untorn.PlanFormat(d, req, dev)
	if err != nil {
		return 0, fmt.Errorf("plan %s: %w", dev, err)
	}
	if *asJSON {
		return exitOK, c.json(p)
	}
	c.printf("%s %s\n", p.MkfsProgram, strings.Join(p.MkfsArgs, " "))
	if len(p.MountOptions) > 0 {
		c.printf("mount options: %s\n", strings.Join(p.MountOptions, ","))
	}
	if p.Atomic {
		kind := "software (xfs copy-on-write)"
		if p.Hardware {
			kind = "hardware"
		}
		c.printf("atomic writes: %s..%s, %s\n", size(p.AtomicUnitMin), size(p.AtomicUnitMax), kind)
	} else {
		c.printf("NOT atomic: %s\n", p.Reason)
	}
	return exitOK, nil
}

func (c cli) verify(args []string) (int, error) {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	unitS := fs.String("unit", "", "atomic write unit to verify (default: the filesystem's unit min)")
	asJSON := fs.Bool("json", false, "print JSON")
	path, err := parse(fs, args, "PATH")
	if err != nil {
		return 0, err
	}
	unit, err := sizeFlag("unit", *unitS)
	if err != nil {
		return 0, err
	}
	v, err := untorn.Verify(path, unit)
	if err != nil {
		if errors.Is(err, untorn.ErrNotPowerOfTwo) {
			return 0, fmt.Errorf("%w: --unit: %v", errUsage, err)
		}
		return 0, fmt.Errorf("verify %s: %w", path, err)
	}
	code := exitOK
	if !v.Atomic {
		code = exitNotAtomic
	}
	if *asJSON {
		return code, c.json(v)
	}
	if v.Atomic {
		kind := "software"
		if v.Hardware {
			kind = "hardware"
		}
		c.printf("%s: atomic writes OK (%s): wrote %s with RWF_ATOMIC; filesystem range %s..%s, %s\n",
			path, v.FSType, size(v.Unit), size(uint64(v.UnitMin)), size(uint64(v.UnitMax)), kind)
	} else {
		c.printf("%s: NOT atomic: %s\n", path, v.Reason)
	}
	return code, nil
}

func floorPow2(n uint64) uint64 {
	p := uint64(1)
	for p <= n/2 {
		p *= 2
	}
	if n == 0 {
		return 0
	}
	return p
}
