#!/usr/bin/env bash
# make test as a new user gets it (make test-fresh; .ci/run runs it too):
#   - a fresh clone of what is committed, outside this checkout;
#   - empty Go module, build, npm and ONNX Runtime caches (a new $HOME);
#   - LANG=C.UTF-8 and only the C locales (LOCPATH hides the locale archive,
#     where en_US.UTF-8 lives once .ci/run has generated it);
#   - none of the optional system packages: a PATH of this machine's
#     /usr/bin and /bin without them, plus go.
# So a missing set-up step shows up here, not in a new user's hands.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
gobin=$(dirname "$(command -v go)")

# What make test must not need (README, "Two commands"): each test that
# uses one skips, naming it, where it is missing.
optional='^(mosquitto.*|cosign|protoc|protoc-gen-go|systemd-analyze|chromium.*|chromedriver|psql|postgres|pg_ctl.*|nats-server|aarch64-linux-gnu-.*|localedef|locale-gen)$'

root=$(mktemp -d "${TMPDIR:-/tmp}/shoal-fresh.XXXXXX")
cleanup() { chmod -R u+w "$root" 2>/dev/null || true; rm -rf "$root"; }
trap cleanup EXIT
mkdir -p "$root/home" "$root/bin" "$root/locale"

for dir in /usr/bin /bin; do
  for f in "$dir"/*; do
    name=${f##*/}
    [ -x "$f" ] && [ ! -d "$f" ] || continue
    [[ $name =~ $optional ]] && continue
    [ -e "$root/bin/$name" ] || ln -s "$f" "$root/bin/$name"
  done
done
for f in "$gobin"/*; do ln -sf "$f" "$root/bin/${f##*/}"; done
for l in /usr/lib/locale/C.utf8 /usr/lib/locale/C.UTF-8; do
  [ -d "$l" ] && ln -s "$l" "$root/locale/${l##*/}"
done

git clone -q --no-local "$src" "$root/shoal"
echo "test-fresh: a clone of $(git -C "$src" rev-parse --short HEAD) in $root/shoal, HOME=$root/home, LANG=C.UTF-8, PATH without the optional packages"
cd "$root/shoal"
env -i \
  HOME="$root/home" \
  PATH="$root/bin" \
  LANG=C.UTF-8 \
  LOCPATH="$root/locale" \
  TMPDIR="${TMPDIR:-/tmp}" \
  GOTOOLCHAIN=local \
  ${GOPROXY:+GOPROXY="$GOPROXY"} \
  ${TEST_TIMEOUT:+TEST_TIMEOUT="$TEST_TIMEOUT"} \
  make test
# The module cache is read-only; cleanup makes it writable to remove it.
