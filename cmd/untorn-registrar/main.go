// Command untorn-registrar registers a CSI driver with the kubelet through
// the kubelet plugin registration API, for clusters where the upstream
// node-driver-registrar sidecar is not available. It waits until the
// driver's socket answers, asks the driver for its name, then serves the
// registration socket the kubelet watches in its plugins_registry
// directory, and removes that socket on exit.
package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

func main() {
	var o options
	klog.InitFlags(nil)
	flag.StringVar(&o.csiAddress, "csi-address", "/csi/csi.sock",
		"path of the driver's CSI socket as this container sees it")
	flag.StringVar(&o.kubeletRegistrationPath, "kubelet-registration-path", "",
		"path of the driver's CSI socket on the node, as the kubelet sees it (required)")
	flag.StringVar(&o.registrationDir, "plugin-registration-path", "/registration",
		"directory the kubelet watches for registration sockets")
	flag.StringVar(&o.driverName, "driver-name", "",
		"driver name to register; empty asks the driver (GetPluginInfo)")
	flag.DurationVar(&o.waitTimeout, "wait-timeout", 0,
		"give up when the driver socket does not answer within this time (0 waits forever)")
	flag.Parse()

	if err := o.validate(); err != nil {
		klog.ErrorS(err, "invalid options")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, klog.Background()); err != nil {
		klog.ErrorS(err, "registrar failed")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	klog.Flush()
}

// pollInterval is how often the registrar tries the driver socket.
const pollInterval = 500 * time.Millisecond
