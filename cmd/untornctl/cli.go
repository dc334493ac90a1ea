package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// Exit codes.
const (
	exitOK        = 0
	exitUsage     = 2 // usage and I/O errors
	exitNotAtomic = 3 // verify: no atomic writes of the unit
)

const usage = `untornctl: atomic (untorn) write volumes

Usage:
  untornctl probe DEVICE [--sysfs-root DIR] [--json]
  untornctl plan DEVICE --fs ext4|xfs --unit SIZE [--cluster SIZE]
                 [--policy require|prefer] [--sysfs-root DIR] [--json]
  untornctl verify PATH [--unit SIZE] [--json]

SIZE is a Kubernetes quantity: 16Ki, 64Ki, 1Mi or plain bytes (16384).
Exit status: 0 ok; 3 verify found no atomic writes of the unit; 2 usage or
I/O error.
`

// errUsage marks command line mistakes.
var errUsage = errors.New("usage")

type cli struct {
	stdout, stderr io.Writer
}

func run(args []string, stdout, stderr io.Writer) int {
	c := cli{stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var code int
	var err error
	switch args[0] {
	case "probe":
		code, err = c.probe(args[1:])
	case "plan":
		code, err = c.plan(args[1:])
	case "verify":
		code, err = c.verify(args[1:])
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		err = fmt.Errorf("%w: unknown command %q (probe, plan, verify)", errUsage, args[0])
	}
	if err != nil {
		fmt.Fprintf(stderr, "untornctl: %v\n", strings.TrimPrefix(err.Error(), "usage: "))
		if errors.Is(err, errUsage) {
			fmt.Fprintln(stderr, "run 'untornctl help' for usage")
		}
		return exitUsage
	}
	return code
}

// parse parses flags that may come before or after the single positional
// argument and returns that argument.
func parse(fs *flag.FlagSet, args []string, what string) (string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return "", fmt.Errorf("%w: %s: %v", errUsage, fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != 1 {
		return "", fmt.Errorf("%w: %s needs exactly one %s, got %d", errUsage, fs.Name(), what, len(pos))
	}
	return pos[0], nil
}

func (c cli) json(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (c cli) printf(format string, args ...any) {
	fmt.Fprintf(c.stdout, format, args...)
}

// sysfs builds the device resolver for --sysfs-root.
func sysfs(root string) untorn.Sysfs {
	if root == "" {
		return untorn.Sysfs{}
	}
	return untorn.Sysfs{Root: root, ByName: true}
}

// sizeFlag parses an optional SIZE flag value ("" = unset).
func sizeFlag(name, v string) (uint64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := untorn.ParseSize(v)
	if err != nil {
		return 0, fmt.Errorf("%w: --%s: %v", errUsage, name, err)
	}
	return n, nil
}

func size(n uint64) string {
	if n == 0 {
		return "0"
	}
	return untorn.FormatSize(n)
}
