package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// stagedVolume is the node's record of a staged volume: where it is, what
// was planned and what verification found. It lives in
// <state-dir>/staged/<volumeID>.json and is removed by NodeUnstageVolume.
type stagedVolume struct {
	VolumeID    string              `json:"volumeID"`
	StagingPath string              `json:"stagingPath"`
	Device      string              `json:"device"`
	Block       bool                `json:"block"`
	FSType      string              `json:"fsType,omitempty"`
	Policy      string              `json:"atomicPolicy"`
	Unit        uint64              `json:"atomicWriteUnit"`
	Limits      untorn.DeviceLimits `json:"deviceLimits"`
	Plan        *untorn.Plan        `json:"plan,omitempty"`
	Verified    untorn.Verification `json:"verification"`
	Hardware    bool                `json:"hardware"`
	// Targets are the paths the volume is published at on this node;
	// unpublish and stats act only on these.
	Targets []string `json:"targets,omitempty"`
}

type stateStore struct{ dir string }

func (s *stateStore) path(id string) (string, error) {
	if !validVolumeID(id) {
		return "", fmt.Errorf("%w: volume ID %q", ErrVolumeNotFound, id)
	}
	return filepath.Join(s.dir, id+".json"), nil
}

func (s *stateStore) get(id string) (stagedVolume, bool, error) {
	p, err := s.path(id)
	if err != nil {
		return stagedVolume{}, false, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return stagedVolume{}, false, nil
	}
	if err != nil {
		return stagedVolume{}, false, err
	}
	var v stagedVolume
	if err := json.Unmarshal(b, &v); err != nil {
		return stagedVolume{}, false, fmt.Errorf("state file %s: %w", p, err)
	}
	return v, true, nil
}

func (s *stateStore) put(v stagedVolume) error {
	p, err := s.path(v.VolumeID)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	// No fsync: the record is rebuilt by staging again (it re-verifies),
	// so losing it in a crash costs nothing, and staging stays cheap.
	return replaceFile(p, filepath.Base(p)+".*.tmp", b, false)
}

// list returns every staged volume recorded on this node.
func (s *stateStore) list() ([]stagedVolume, error) {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []stagedVolume
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !validVolumeID(id) {
			continue
		}
		v, found, err := s.get(id)
		if err != nil {
			return nil, err
		}
		if found {
			out = append(out, v)
		}
	}
	return out, nil
}

// remove drops the record of a volume and the temporary files that put
// leaves when the process is killed before its rename (<id>.json.*.tmp,
// empty or holding a record of the volume).
func (s *stateStore) remove(id string) error {
	p, err := s.path(id)
	if err != nil {
		return err
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range ents {
		mid, ok := strings.CutPrefix(e.Name(), filepath.Base(p)+".")
		if !ok || !strings.HasSuffix(mid, ".tmp") || !e.Type().IsRegular() {
			continue
		}
		t := filepath.Join(s.dir, e.Name())
		if b, err := os.ReadFile(t); err != nil || len(b) > 0 && !holdsRecordOf(b, id) {
			continue
		}
		if err := os.Remove(t); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func holdsRecordOf(b []byte, id string) bool {
	var v stagedVolume
	return json.Unmarshal(b, &v) == nil && v.VolumeID == id
}
