package driver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// ListenUnix listens on a unix socket at path whose mode is perm from the
// moment the path exists, whatever the process umask: the socket is bound
// in a new private (0700) directory beside path, given its mode there and
// then linked to path, which never replaces a file. A stale socket at path
// is removed first; any other file there is refused and left untouched.
// Closing the listener removes the socket from path if it is still there.
func ListenUnix(path string, perm os.FileMode) (net.Listener, error) {
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.Mode()&os.ModeSocket == 0:
		return nil, fmt.Errorf("%w: %s exists and is not a socket; it is left untouched", ErrInvalidOption, path)
	case err == nil:
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	}
	// MkdirTemp makes the directory 0700 (the umask can only narrow it),
	// so nobody else can reach the socket before its mode is set.
	tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".sock")
	if err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	defer os.Remove(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	lis.SetUnlinkOnClose(false)
	err = os.Chmod(tmp, perm)
	if err == nil {
		err = os.Link(tmp, path)
	}
	os.Remove(tmp)
	if err != nil {
		lis.Close()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	fi, err = os.Lstat(path)
	if err != nil {
		lis.Close()
		return nil, err
	}
	return &socketListener{UnixListener: lis, path: path, fi: fi}, nil
}

// socketListener removes its socket file on Close, unless the path now
// holds another file.
type socketListener struct {
	*net.UnixListener
	path string
	fi   os.FileInfo
}

func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	if fi, lerr := os.Lstat(l.path); lerr == nil && os.SameFile(fi, l.fi) {
		if rerr := os.Remove(l.path); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}

// socketPerm is the mode of the CSI socket: the kubelet and the sidecars
// in the plugin's pod (same user, or its group) connect; nobody else may.
const socketPerm os.FileMode = 0o660
