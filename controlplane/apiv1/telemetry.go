package apiv1

// TelemetrySummary is the answer to GET /api/v1/telemetry: stored
// telemetry totals by device, and over them.
type TelemetrySummary struct {
	Devices []DeviceTelemetry `json:"devices"`
	Total   TelemetryTotals   `json:"total"`
}

// DeviceTelemetry is one device's telemetry totals.
type DeviceTelemetry struct {
	DeviceID       string `json:"device_id"`
	Records        uint64 `json:"records"`
	Predictions    uint64 `json:"predictions"`
	Errors         uint64 `json:"errors"`
	HighestSeq     uint64 `json:"highest_seq"`
	DroppedRecords uint64 `json:"dropped_records"`
}

// TelemetryTotals sums DeviceTelemetry over devices.
type TelemetryTotals struct {
	Records        uint64 `json:"records"`
	Predictions    uint64 `json:"predictions"`
	Errors         uint64 `json:"errors"`
	DroppedRecords uint64 `json:"dropped_records"`
}
