// Package shoalv1 is the wire contract between the Shoal control plane and
// its agents: the protobuf messages of shoal.proto.
//
// Every MQTT payload is one of these messages, protobuf-encoded, on a
// device topic {prefix}/d/{device}/{kind} (internal/topics builds and
// parses them): DesiredState on desired, retained, from the control plane;
// ReportedState on reported and DeviceStatus on status, both retained,
// from the agent (DeviceStatus is also its last will); TelemetryBatch on
// telemetry, from the agent's outbox; Ack on ack, once the control plane
// has stored the records it names, the only signal on which an agent
// deletes them. A DesiredState carries one DSSE envelope (JSON) per model,
// whose payload is a DeploymentManifest in protobuf JSON form, signed by
// the control plane. A ReferenceProfile travels inside a manifest
// (reference_profile); a StatsReport is not sent at all, but is the
// control plane's stored form of merged data statistics.
//
// Schema versions: every top-level message carries schema_version, 1 for
// all of them today. A receiver drops (and logs) a payload of a schema
// version it does not speak rather than misread it: the control plane
// anything but 1, the agent a DesiredState or DeploymentManifest other
// than 1 and an Ack newer than 1. A field added under a new number needs
// no new version (a proto3 reader skips fields it does not know); a change
// an older peer would misread does.
//
// shoal.pb.go is generated from shoal.proto by `make proto` (protoc, from
// Debian's protobuf-compiler, with the protoc-gen-go version the Makefile
// pins) and committed, so a build needs neither: edit shoal.proto, run
// make proto, commit both.
package shoalv1
