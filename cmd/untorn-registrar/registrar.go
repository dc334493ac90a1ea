package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/untorn/untorn/pkg/driver"
)

var (
	// ErrInvalidOption marks a bad command line.
	ErrInvalidOption = errors.New("invalid option")
	// ErrRefused means the kubelet rejected the registration.
	ErrRefused = errors.New("kubelet refused the registration")
)

type options struct {
	csiAddress              string
	kubeletRegistrationPath string
	registrationDir         string
	driverName              string
	waitTimeout             time.Duration
}

func (o options) validate() error {
	switch {
	case o.csiAddress == "":
		return fmt.Errorf("%w: --csi-address is empty", ErrInvalidOption)
	case o.kubeletRegistrationPath == "":
		return fmt.Errorf("%w: --kubelet-registration-path is required (the driver socket's path on the node)", ErrInvalidOption)
	case !filepath.IsAbs(o.kubeletRegistrationPath):
		return fmt.Errorf("%w: --kubelet-registration-path %q is not absolute", ErrInvalidOption, o.kubeletRegistrationPath)
	case o.registrationDir == "":
		return fmt.Errorf("%w: --plugin-registration-path is empty", ErrInvalidOption)
	case o.waitTimeout < 0:
		return fmt.Errorf("%w: --wait-timeout %v is negative", ErrInvalidOption, o.waitTimeout)
	}
	return nil
}

// run waits for the driver, serves the registration socket until ctx ends,
// then removes the socket.
func run(ctx context.Context, o options, log logr.Logger) error {
	name, err := waitForDriver(ctx, o, log)
	if err != nil {
		return err
	}
	sock := filepath.Join(o.registrationDir, name+"-reg.sock")
	// Only the kubelet (root) connects: the socket is 0600 whatever the
	// umask, and a file at its path that is not a stale socket is refused.
	lis, err := driver.ListenUnix(sock, 0o600)
	if err != nil {
		return fmt.Errorf("registration socket: %w", err)
	}
	defer lis.Close()

	srv := grpc.NewServer()
	reg := &registrationServer{driverName: name, endpoint: o.kubeletRegistrationPath, log: log, refused: make(chan error, 1)}
	registerapi.RegisterRegistrationServer(srv, reg)
	log.Info("serving kubelet plugin registration", "driver", name, "socket", sock, "endpoint", o.kubeletRegistrationPath)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case <-ctx.Done():
		srv.Stop()
		<-errc
		return nil
	case err := <-reg.refused:
		srv.GracefulStop() // let the kubelet's call complete
		<-errc
		return err
	case err := <-errc:
		return fmt.Errorf("registration server: %w", err)
	}
}

// waitForDriver polls the driver's socket until GetPluginInfo answers and
// returns the driver name (or the configured one). The kubelet does not
// retry a failed registration, so registering before the driver answers
// would leave the node without the driver.
func waitForDriver(ctx context.Context, o options, log logr.Logger) (string, error) {
	if o.waitTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.waitTimeout)
		defer cancel()
	}
	var last error
	for attempt := 0; ; attempt++ {
		name, err := pluginName(ctx, o.csiAddress)
		if err == nil {
			if o.driverName != "" && o.driverName != name {
				log.Info("driver reports another name; registering the configured one", "configured", o.driverName, "reported", name)
				return o.driverName, nil
			}
			return name, nil
		}
		last = err
		if attempt%20 == 0 {
			log.Info("waiting for the CSI driver", "address", o.csiAddress, "err", err.Error())
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("driver at %s did not answer: %w (last error: %v)", o.csiAddress, ctx.Err(), last)
		case <-time.After(pollInterval):
		}
	}
}

func pluginName(ctx context.Context, address string) (string, error) {
	if _, err := os.Stat(address); err != nil {
		return "", err
	}
	conn, err := grpc.NewClient("unix://"+address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := csi.NewIdentityClient(conn).GetPluginInfo(cctx, &csi.GetPluginInfoRequest{})
	if err != nil {
		return "", err
	}
	if resp.GetName() == "" {
		return "", errors.New("driver returned an empty name")
	}
	return resp.GetName(), nil
}

// registrationServer answers the kubelet's plugin watcher.
type registrationServer struct {
	registerapi.UnimplementedRegistrationServer
	driverName string
	endpoint   string
	log        logr.Logger

	// refused receives the kubelet's error when it rejects the driver;
	// run then exits so that the container restarts and registers again.
	refused chan error
	once    sync.Once
}

func (s *registrationServer) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              s.driverName,
		Endpoint:          s.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (s *registrationServer) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if st.GetPluginRegistered() {
		s.log.Info("kubelet registered the driver", "driver", s.driverName)
		return &registerapi.RegistrationStatusResponse{}, nil
	}
	err := fmt.Errorf("%w: %s", ErrRefused, st.GetError())
	s.once.Do(func() { s.refused <- err })
	return &registerapi.RegistrationStatusResponse{}, nil
}
