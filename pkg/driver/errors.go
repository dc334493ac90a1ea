package driver

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// Driver errors. Domain code wraps these; toStatus maps them to gRPC codes
// at the RPC boundary.
var (
	// ErrInvalidParameter: a StorageClass parameter or request field is wrong.
	ErrInvalidParameter = errors.New("invalid parameter")
	// ErrInvalidArgument: a request is malformed (missing field, bad path, bad capability).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrAlreadyExists: a volume of that name or a mount at that path exists
	// with different, incompatible settings.
	ErrAlreadyExists = errors.New("already exists with incompatible settings")
	// ErrOutOfRange: the capacity range cannot be satisfied.
	ErrOutOfRange = errors.New("capacity out of range")
	// ErrInFlight: another operation on the same volume is in progress.
	ErrInFlight = errors.New("an operation on this volume is already in progress")
	// ErrAtomicUnavailable: atomicPolicy require cannot be met on this device.
	ErrAtomicUnavailable = errors.New("atomic writes required but not available")
	// ErrNotStaged: an operation needs a staged volume.
	ErrNotStaged = errors.New("volume is not staged")
	// ErrVolumeInUse: the volume is still staged or published.
	ErrVolumeInUse = errors.New("volume is in use")
	// ErrInvalidToken: a ListVolumes starting token this driver did not issue.
	ErrInvalidToken = errors.New("invalid starting token")
)

// toStatus turns any error leaving a handler into a gRPC status error. It is
// the only place where codes are chosen.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codeOf(err), err.Error())
}

// reply is a handler's answer: resp, or err mapped by toStatus.
func reply[T any](resp *T, err error) (*T, error) {
	if err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}

func codeOf(err error) codes.Code {
	var mountErr mount.MountError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, ErrInFlight), errors.Is(err, ErrInvalidToken):
		return codes.Aborted
	case errors.Is(err, ErrInvalidParameter), errors.Is(err, ErrInvalidArgument):
		return codes.InvalidArgument
	case errors.Is(err, ErrVolumeNotFound):
		return codes.NotFound
	case errors.Is(err, ErrAlreadyExists):
		return codes.AlreadyExists
	case errors.Is(err, ErrOutOfRange):
		return codes.OutOfRange
	case errors.Is(err, ErrNoSpace):
		return codes.ResourceExhausted
	case errors.Is(err, ErrBackendUnavailable):
		return codes.Unavailable
	case errors.Is(err, ErrAtomicUnavailable), errors.Is(err, ErrNotStaged), errors.Is(err, ErrVolumeInUse):
		return codes.FailedPrecondition
	case errors.Is(err, untorn.ErrInvalidSize), errors.Is(err, untorn.ErrInvalidFSType),
		errors.Is(err, untorn.ErrInvalidPolicy), errors.Is(err, untorn.ErrNotPowerOfTwo):
		return codes.InvalidArgument
	case errors.Is(err, untorn.ErrUnsupported), errors.Is(err, untorn.ErrNoHardware),
		errors.Is(err, untorn.ErrMisaligned), errors.Is(err, untorn.ErrUnitTooLarge),
		errors.Is(err, untorn.ErrUnitTooSmall), errors.Is(err, untorn.ErrClusterOutOfRange):
		return codes.FailedPrecondition
	case errors.As(err, &mountErr):
		switch mountErr.Type {
		case mount.FilesystemMismatch, mount.HasFilesystemErrors, mount.UnformattedReadOnly:
			return codes.FailedPrecondition
		}
		return codes.Internal
	}
	return codes.Internal
}
