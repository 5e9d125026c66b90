#!/bin/sh
# A command trainer for the tests: it checks its inputs, prints progress,
# and writes $FAKE_MODEL as its model, or misbehaves as $FAKE_MODE says.
set -eu
while [ $# -gt 0 ]; do
	case "$1" in
	--data) data=$2; shift 2 ;;
	--spec) spec=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	*) echo "unknown argument $1" >&2; exit 2 ;;
	esac
done
[ "$data" = "$SHOAL_DATA" ] && [ "$spec" = "$SHOAL_SPEC" ] && [ "$out" = "$SHOAL_OUT" ] || { echo "flags and environment differ" >&2; exit 2; }
echo "header: $(head -n 1 "$data")"
echo "row 3: $(sed -n 4p "$data")"
echo "rows: $(($(wc -l <"$data") - 1))"
echo "spec: $(cat "$spec")"
echo "secret: ${SHOAL_TEST_SECRET:-unset}"
echo '{"epoch": 1, "epochs": 2, "train_loss": 0.9, "validation_metric": 0.5, "metric": "accuracy"}'
echo "warming up" >&2
echo '{"epoch": 2, "epochs": 2, "train_loss": 0.4, "validation_metric": 0.75, "metric": "accuracy"}'
case "${FAKE_MODE:-ok}" in
fail) echo "CUDA out of memory" >&2; exit 3 ;;
sleep) sleep 30 ;;
nomodel) echo '{"accuracy": 0.9}' >"$out/metrics.json"; exit 0 ;;
notonnx) echo "not a model" >"$out/model.onnx" ;;
longline) head -c 10000 /dev/zero | tr '\0' x; echo; echo "after"; cp "$FAKE_MODEL" "$out/model.onnx" ;;
*) cp "$FAKE_MODEL" "$out/model.onnx" ;;
esac
case "${FAKE_MODE:-ok}" in
nometrics) ;;
badjson) printf '{"accuracy": 0.9' >"$out/metrics.json" ;;
notnumber) echo '{"accuracy": "high"}' >"$out/metrics.json" ;;
*) echo '{"accuracy": 0.93, "macro_f1": 0.91}' >"$out/metrics.json" ;;
esac
