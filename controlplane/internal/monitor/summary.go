package monitor

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/shoalfleet/shoal/controlplane/apiv1"
	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/topics"
)

// Summary is the telemetry overview of GET /api/v1/telemetry
// (docs/API.md): DeviceSummary by device, Totals over them.
type (
	Summary       = apiv1.TelemetrySummary
	DeviceSummary = apiv1.DeviceTelemetry
	Totals        = apiv1.TelemetryTotals
)

// Summary returns the telemetry totals of every device that has sent any
// (deviceID ""), or of one device. Errors: Invalid (not a device id),
// NotFound (no telemetry stored for the device).
func (m *Monitor) Summary(ctx context.Context, deviceID string) (Summary, error) {
	const op = "monitor.Summary"
	if err := ctx.Err(); err != nil {
		return Summary{}, err
	}
	sum := Summary{Devices: []DeviceSummary{}}
	add := func(id string, c deviceCounters) {
		sum.Devices = append(sum.Devices, DeviceSummary{
			DeviceID: id, Records: c.Records, Predictions: c.Predictions, Errors: c.Errors,
			HighestSeq: c.HighestSeq, DroppedRecords: c.DroppedRecords,
		})
		sum.Total.Records = addCapped(sum.Total.Records, c.Records)
		sum.Total.Predictions = addCapped(sum.Total.Predictions, c.Predictions)
		sum.Total.Errors = addCapped(sum.Total.Errors, c.Errors)
		sum.Total.DroppedRecords = addCapped(sum.Total.DroppedRecords, c.DroppedRecords)
	}
	if deviceID != "" {
		if err := topics.ValidateDeviceID(deviceID); err != nil {
			return Summary{}, shoalerr.Wrap(err, shoalerr.Invalid, op, "telemetry summary")
		}
		var c deviceCounters
		var found bool
		err := m.st.View(func(tx store.Tx) error {
			var err error
			found, err = store.GetJSON(tx, countersKey(deviceID), &c)
			return err
		})
		if err != nil {
			return Summary{}, shoalerr.Wrap(err, shoalerr.Internal, op, "read telemetry of %q", deviceID)
		}
		if !found {
			return Summary{}, shoalerr.E(shoalerr.NotFound, op, "no telemetry stored for device %q (not enrolled, or nothing sent yet)", deviceID)
		}
		add(deviceID, c)
		return sum, nil
	}
	err := m.st.View(func(tx store.Tx) error {
		return tx.Scan([]byte(countersPrefix), func(k, v []byte) error {
			var c deviceCounters
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("decode %s: %w", k, err)
			}
			add(strings.TrimPrefix(string(k), countersPrefix), c)
			return nil
		})
	})
	if err != nil {
		return Summary{}, shoalerr.Wrap(err, shoalerr.Internal, op, "read telemetry")
	}
	return sum, nil
}
