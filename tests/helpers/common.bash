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

# Stopped processes never act on SIGTERM, and a hung server must not hang
# the suite: continue everything, then stop the processes newest first (an
# nbd-serve before the ram-ul it syncs to at shutdown), each with SIGTERM
# and, if it is still there after 5 s, SIGKILL. Then common_teardown.
ordered_teardown() {
  local p i j
  for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; done
  for ((j = ${#PIDS[@]} - 1; j >= 0; j--)); do
    p=${PIDS[j]}
    kill "$p" 2>/dev/null || continue
    for ((i = 0; i < 100; i++)); do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.05
    done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  common_teardown
}

# ul NAME ARGS...: ram-ul --listen unix:$T/NAME.sock ARGS in the background,
# log in $T/NAME.log; sets WSOCK and UL_PID.
ul() {
  local name=$1
  shift
  WSOCK=$T/$name.sock
  "$BIN/ram-ul" --listen "unix:$WSOCK" "$@" 2>"$T/$name.log" &
  UL_PID=$!
  PIDS+=("$UL_PID")
  wait_for_socket "$WSOCK"
}

# ul_again NAME ARGS...: restart ram-ul on $WSOCK, where a killed one left
# its socket file (which wait_for_socket would take for the new server):
# waits for the new server's "offering" line instead. Sets UL_PID.
ul_again() {
  local name=$1 i
  shift
  "$BIN/ram-ul" --listen "unix:$WSOCK" -v "$@" 2>"$T/$name.log" &
  UL_PID=$!
  PIDS+=("$UL_PID")
  for ((i = 0; i < 200; i++)); do
    grep -q 'offering' "$T/$name.log" && return 0
    kill -0 "$UL_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "ram-ul did not start again on $WSOCK:" >&2
  cat "$T/$name.log" >&2
  return 1
}
