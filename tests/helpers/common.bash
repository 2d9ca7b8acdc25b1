# Shared by the bats files: paths, a scratch directory, servers started in
# the background with cleanup registered first, and tool requirements that
# fail (naming the Debian package) instead of skipping.

ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
BIN=$ROOT/build/bin
PROBE=$ROOT/build/tests/nbd-probe
NBD_SERVE=$BIN/nbd-serve

common_setup() {
  T=$(mktemp -d "${BATS_TMPDIR:-/tmp}/memsync.XXXXXX")
  PIDS=()
}

common_teardown() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$T"
}

# require COMMAND PACKAGE: a missing third-party tool is a failure.
require() {
  command -v "$1" >/dev/null || { echo "missing $1: run 'make deps' (Debian package $2)" >&2; return 1; }
}

# wait_for_socket PATH [SECONDS]
wait_for_socket() {
  local i
  for ((i = 0; i < ${2:-10} * 20; i++)); do
    [[ -S $1 ]] && return 0
    sleep 0.05
  done
  echo "socket $1 did not appear" >&2
  return 1
}

# serve NAME ARGS...: nbd-serve --listen unix:$T/NAME.sock ARGS in the
# background, log in $T/NAME.log; sets SOCK, URI and SERVER_PID.
serve() {
  local name=$1
  shift
  SOCK=$T/$name.sock
  URI="nbd+unix:///?socket=$SOCK"
  "$NBD_SERVE" --listen "unix:$SOCK" "$@" 2>"$T/$name.log" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_for_socket "$SOCK"
}

# random_file PATH SIZE_MIB
random_file() { head -c "$(( $2 * 1024 * 1024 ))" /dev/urandom >"$1"; }

# nbdsh is "#!/usr/bin/env python3": make it find Debian's python3 (which has
# the nbd module) even when another python3 comes first in PATH.
nbdsh() { PATH=/usr/bin:$PATH command nbdsh "$@"; }
