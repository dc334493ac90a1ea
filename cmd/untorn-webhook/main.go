// Command untorn-webhook is the mutating admission webhook that injects the
// untorn writethrough shim into pods labelled untorn.csi.dev/inject: "true".
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/untorn/untorn/pkg/webhook"
)

func main() {
	klog.InitFlags(nil)
	def := webhook.DefaultConfig()
	opts := webhook.ServerOptions{Config: def}
	flag.StringVar(&opts.Address, "listen", ":9443", "address of the HTTPS endpoint")
	flag.StringVar(&opts.CertFile, "tls-cert-file", "/etc/untorn-webhook/tls/tls.crt", "serving certificate (reloaded when it changes)")
	flag.StringVar(&opts.KeyFile, "tls-key-file", "/etc/untorn-webhook/tls/tls.key", "serving key (reloaded when it changes)")
	flag.StringVar(&opts.Config.DriverName, "driver-name", def.DriverName, "CSI driver serving the shim volume")
	flag.StringVar(&opts.Config.DefaultLibc, "default-libc", def.DefaultLibc, "shim build for pods without the "+webhook.LibcAnnotation+" annotation: glibc or musl")
	unit := flag.String("default-unit", fmt.Sprint(def.DefaultUnit), "UNTORN_UNIT for pods without the "+webhook.UnitAnnotation+" annotation")
	flag.Parse()

	if err := validate(&opts, *unit); err != nil {
		fmt.Fprintf(os.Stderr, "untorn-webhook: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := webhook.Serve(ctx, opts); err != nil {
		klog.ErrorS(err, "webhook server failed")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	klog.Flush()
}

func validate(opts *webhook.ServerOptions, unit string) error {
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if opts.Config.DriverName == "" {
		return fmt.Errorf("--driver-name must not be empty")
	}
	switch opts.Config.DefaultLibc {
	case "glibc", "musl":
	default:
		return fmt.Errorf("--default-libc=%q: want glibc or musl", opts.Config.DefaultLibc)
	}
	n, err := webhook.ParseUnit(unit)
	if err != nil {
		return fmt.Errorf("--default-unit: %w", err)
	}
	opts.Config.DefaultUnit = n
	return nil
}
