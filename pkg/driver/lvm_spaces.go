package driver

import (
	"context"
	"encoding/json"
	"fmt"
)

// pvFields are the fields the backend reads from pvs: every physical
// volume of the host, filtered by volume group here (no selection syntax
// to quote).
const pvFields = "pv_name,vg_name,pv_free,pe_start,dev_size,vg_extent_size"

type pvRow struct {
	Name       string `json:"pv_name"`
	VG         string `json:"vg_name"`
	Free       string `json:"pv_free"`
	PEStart    string `json:"pe_start"`
	DevSize    string `json:"dev_size"`
	ExtentSize string `json:"vg_extent_size"`
}

var (
	_ spaceLister   = (*LVMBackend)(nil)
	_ placedBackend = (*LVMBackend)(nil)
)

// Spaces lists the volume group's physical volumes: each one's free space,
// size, and where its extents start (pe_start) and step (the extent size),
// so that the limits of an LV placed there can be worked out.
func (b *LVMBackend) Spaces(ctx context.Context) ([]DeviceSpace, error) {
	if err := ValidateVGName(b.vg); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBackendUnavailable, err)
	}
	out, err := b.run(ctx, "pvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", pvFields)
	if err != nil {
		return nil, err
	}
	var rep struct {
		Report []struct {
			PV []pvRow `json:"pv"`
		} `json:"report"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return nil, fmt.Errorf("parse pvs JSON report: %w", err)
	}
	var spaces []DeviceSpace
	for _, r := range rep.Report {
		for _, row := range r.PV {
			if row.VG != b.vg {
				continue
			}
			s := DeviceSpace{Device: row.Name}
			var ext int64
			for _, f := range []struct {
				name, v string
				to      *int64
			}{
				{"pv_free", row.Free, &s.FreeBytes}, {"pe_start", row.PEStart, &s.Offset},
				{"dev_size", row.DevSize, &s.SizeBytes}, {"vg_extent_size", row.ExtentSize, &ext},
			} {
				if *f.to, err = parseBytes(f.name, f.v); err != nil {
					return nil, err
				}
			}
			if ext <= 0 {
				return nil, fmt.Errorf("pvs reported extent size %d for %s", ext, b.vg)
			}
			s.Step = ext
			b.extent.Store(ext)
			spaces = append(spaces, s)
		}
	}
	if len(spaces) == 0 {
		return nil, fmt.Errorf("%w: pvs reports no physical volume of volume group %q", ErrBackendUnavailable, b.vg)
	}
	return spaces, nil
}

// CreateOn is Create with the LV's extents allocated on the given physical
// volumes only.
func (b *LVMBackend) CreateOn(ctx context.Context, id string, sizeBytes int64, meta map[string]string, pvs []string) (BackendVolume, error) {
	return b.create(ctx, id, sizeBytes, meta, pvs)
}

// ExpandOn is Expand with the new extents allocated on the given physical
// volumes only.
func (b *LVMBackend) ExpandOn(ctx context.Context, id string, sizeBytes int64, pvs []string) (BackendVolume, error) {
	return b.expand(ctx, id, sizeBytes, pvs)
}
