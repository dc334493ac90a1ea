// Command untorn-csi is the untorn CSI plugin: Identity, Controller and Node
// services for node-local atomic-write volumes on a loop or LVM backend.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"
	"k8s.io/utils/exec"

	untorn "github.com/untorn/untorn/pkg/atomic"
	"github.com/untorn/untorn/pkg/driver"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "untorn-csi:", err)
		klog.Flush()
		os.Exit(2)
	}
	klog.Flush()
}

func run(args []string) error {
	fs := flag.NewFlagSet("untorn-csi", flag.ContinueOnError)
	klog.InitFlags(fs)
	var o driver.Options
	var mode, reserve string
	fs.StringVar(&mode, "mode", "all", "services to serve: controller, node or all")
	fs.StringVar(&o.Endpoint, "endpoint", "unix:///csi/csi.sock", "CSI endpoint, unix:///path/to/csi.sock")
	fs.StringVar(&o.NodeID, "node-id", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fs.StringVar(&o.Backend, "backend", "lvm", "volume backend: loop or lvm")
	fs.StringVar(&o.LoopDir, "loop-dir", "/var/lib/untorn/loop", "directory for loop backend images")
	fs.StringVar(&reserve, "loop-reserve", "1Gi", "space the loop backend leaves free in --loop-dir")
	fs.StringVar(&o.VolumeGroup, "volume-group", "", "LVM volume group for --backend=lvm")
	fs.StringVar(&o.SysfsRoot, "sysfs-root", "/sys", "sysfs mount point")
	fs.StringVar(&o.StateDir, "state-dir", "/var/lib/untorn", "directory for the node's record of staged volumes")
	fs.StringVar(&o.MetricsAddress, "metrics-address", "", "serve Prometheus metrics on this [host]:port (empty: off)")
	fs.StringVar(&o.ShimDir, "shim-dir", "/usr/lib/untorn/shim", "directory served as the inline ephemeral volume type=shim")
	fs.Int64Var(&o.MaxVolumes, "max-volumes", 0, "volumes this node may hold, reported to the scheduler (0: no limit)")
	fs.StringVar(&o.Version, "driver-version", "", "override the version reported by GetPluginInfo")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.Mode = driver.Mode(mode)
	q, err := untorn.ParseQuantity(reserve)
	if err != nil || q.Sign() < 0 {
		return fmt.Errorf("%w: --loop-reserve %q: want a quantity such as 1Gi", driver.ErrInvalidOption, reserve)
	}
	o.LoopReserve = q.Value()
	if *showVersion {
		fmt.Println(driver.DriverName, driver.BuildVersion())
		return nil
	}
	if err := o.Validate(); err != nil {
		return err
	}

	runner := exec.New()
	var backend driver.Backend
	switch {
	case o.Mode == driver.ModeController:
		// Expansion only: the volumes live on the nodes.
	case o.Backend == "loop":
		backend = driver.NewLoopBackend(o.LoopDir, o.LoopReserve, runner)
	case o.Backend == "lvm":
		backend = driver.NewLVMBackend(o.VolumeGroup, runner)
	}
	deps := driver.Deps{
		Backend: backend,
		Mounter: mount.NewSafeFormatAndMount(mount.New(""), runner),
		Exec:    runner,
		Atomic:  driver.SysfsAtomic{Sysfs: untorn.Sysfs{Root: o.SysfsRoot}},
	}
	var reg *prometheus.Registry
	if o.MetricsAddress != "" {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		m := driver.NewMetrics(reg)
		deps.Metrics = m
		deps.Interceptors = append(deps.Interceptors, m.UnaryInterceptor())
	}
	d, err := driver.New(o, deps)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	metricsDone := make(chan error, 1)
	if reg != nil {
		go func() {
			err := driver.ServeMetrics(ctx, o.MetricsAddress, reg)
			if err != nil {
				cancel(err)
			}
			metricsDone <- err
		}()
	} else {
		metricsDone <- nil
	}
	err = d.Run(ctx)
	cancel(nil)
	if merr := <-metricsDone; err == nil {
		err = merr
	}
	return err
}
