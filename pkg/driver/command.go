package driver

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"

	"k8s.io/utils/exec"
)

// runCommand runs a command (arguments as a list, never a shell) with
// LC_ALL=C under ctx, so a kubelet timeout kills it, and returns its
// stdout; the error wraps the exit error (or ctx's) and carries stderr.
// Staging and the loop backend run their commands through it; the LVM
// backend has its own runner, which classifies lvm2's messages.
func runCommand(ctx context.Context, ex exec.Interface, name string, args ...string) (string, error) {
	cmd := ex.CommandContext(ctx, name, args...)
	cmd.SetEnv(append(os.Environ(), "LC_ALL=C"))
	var stdout, stderr bytes.Buffer
	cmd.SetStdout(&stdout)
	cmd.SetStderr(&stderr)
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), ctx.Err())
		}
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
