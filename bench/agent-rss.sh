#!/usr/bin/env bash
# Agent memory: RSS of a real shoal-agent process, idle, before and after a
# small model is loaded. Prints VmRSS and its split into RssAnon (Go heap +
# ONNX Runtime's allocations, its arena included) and RssFile (mapped code:
# the binary and libonnxruntime.so).
# Run from the project root after `make build ort`: bench/agent-rss.sh
set -euo pipefail
T=$(mktemp -d /tmp/shoal-rss.XXXXXX); PIDS=()
trap 'for p in "${PIDS[@]:-}"; do kill $p 2>/dev/null || true; done; rm -rf $T' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() { for i in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.2; done; return 1; }
mem() {
  awk '/^(VmRSS|RssAnon|RssFile):/{printf "%s %6.1f MB  ", $1, $2/1024}' /proc/$1/status
  # RSS of libonnxruntime's own mapped pages (code + data), from smaps.
  awk '/^[0-9a-f]+-[0-9a-f]+ /{ort = ($0 ~ /libonnxruntime/)} /^Rss:/{if (ort) s += $2} END{printf "(libonnxruntime mapped: %.1f MB)\n", s/1024}' /proc/$1/smaps
}
export ONNXRUNTIME_LIB=${ONNXRUNTIME_LIB:-$HOME/.cache/shoal/onnxruntime/1.24.1/linux-x64/libonnxruntime.so.1}
HTTP=$(port); MQTT=$(port); API=$(port); S=http://127.0.0.1:$HTTP
bin/shoal serve --data-dir $T/cp --http-addr 127.0.0.1:$HTTP --mqtt-addr 127.0.0.1:$MQTT >$T/cp.log 2>&1 & PIDS+=($!)
wait_http $S/api/v1/trust/public-key
TOK=$(bin/shoal --server $S token create --json | python3 -c 'import sys,json;print(json.load(sys.stdin)["token"])')
bin/shoal-agent run --data-dir $T/a --server $S --device-id rss --enroll-token $TOK --api-addr 127.0.0.1:$API --log-level warn >$T/a.log 2>&1 & AGENT=$!; PIDS+=($AGENT)
wait_http http://127.0.0.1:$API/v2/health/live
sleep 5
echo -n "idle, no model:          "; mem $AGENT
MODEL=$(go env GOMODCACHE)/github.com/yalue/onnxruntime_go@v1.27.0/test_data/example_dynamic_axes.onnx
bin/shoal --server $S model push --name tiny --version 1 $MODEL >/dev/null
bin/shoal --server $S deploy --model tiny --version 1 >/dev/null
wait_http http://127.0.0.1:$API/v2/models/tiny/ready
for i in $(seq 1 200); do curl -fsS -o /dev/null -d '{"inputs":[{"name":"input_vectors","shape":[1,10],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,9,10]}]}' http://127.0.0.1:$API/v2/models/tiny/infer; done
sleep 10
echo -n "idle, tiny model loaded: "; mem $AGENT
ls -l bin/shoal-agent | awk '{printf "agent binary: %.1f MB\n", $5/1048576}'
