#!/usr/bin/env bats
# The managed mount (nbd-serve --cache, man/nbd-serve.1 "Managed mount"): one
# @test per promise. Real processes only: ram-ul is the remote, with its
# backing file as the judge of what reached it (cmp); nbdcopy, nbdinfo and
# qemu-io are the NBD clients; net-proxy stands between nbd-serve and ram-ul
# where the network has to break. Timing checks are lower bounds or "within
# a generous limit" polls only: a loaded machine may be slow, never fast.

load helpers/common

teardown() { ordered_teardown; }

RAM_UL=$BIN/ram-ul
NET_PROXY=${NET_PROXY:-$ROOT/build/tests/net-proxy}
MIB=1048576

setup() {
  common_setup
  export T
}

# remote_file SIZE_MIB: a random file $T/remote.img for ram-ul and its copy
# $T/orig, the content the remote starts with.
remote_file() {
  random_file "$T/remote.img" "$1"
  cp "$T/remote.img" "$T/orig"
}

# managed NAME ARGS...: nbd-serve --cache $T/NAME.cache ARGS on
# unix:$T/NAME.sock (see serve); sets SOCK, URI and SERVER_PID.
managed() {
  local name=$1
  shift
  serve "$name" --cache "$T/$name.cache" "$@"
}

# proxy NAME ARGS...: net-proxy --listen unix:$T/NAME.sock --control
# unix:$T/NAME.ctl ARGS; sets PSOCK and CTL.
proxy() {
  local name=$1
  shift
  [[ -x $NET_PROXY ]] || { echo "missing $NET_PROXY: run 'make $NET_PROXY'" >&2; return 1; }
  PSOCK=$T/$name.sock
  CTL=$T/$name.ctl
  "$NET_PROXY" --listen "unix:$PSOCK" --control "unix:$CTL" "$@" 2>"$T/$name.log" &
  PIDS+=($!)
  wait_for_socket "$CTL"  # bound after the listening socket
}

# ctl COMMAND: one control command to the proxy at $CTL.
ctl() { "$NET_PROXY" --control "unix:$CTL" --send "$*"; }

# patched OUT SRC OFFSET COUNT BYTE: OUT is SRC with COUNT bytes BYTE (octal
# escape, e.g. 253 for 0xab) written at OFFSET.
patched() {
  cp "$2" "$1"
  head -c "$4" /dev/zero | tr '\0' "\\$5" | dd of="$1" bs=1 seek="$3" conv=notrunc status=none
}

# eventually SECONDS COMMAND...: true once COMMAND succeeds, polling every
# 0.1 s; false after SECONDS.
eventually() {
  local limit=$(($1 * 10)) i
  shift
  for ((i = 0; i < limit; i++)); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}

@test "a managed mount reads what the remote holds; a missing cache is created with the remote's size and filled in the background" {
  require nbdcopy libnbd-bin
  remote_file 64
  ul ul "file:$T/remote.img"
  managed m "remote:unix:$WSOCK"
  [ "$(stat -c %s "$T/m.cache")" -eq $((64 * MIB)) ]
  [ "$(nbdinfo --size "$URI")" -eq $((64 * MIB)) ]
  # The pull workers copy everything without any read.
  eventually 20 cmp -s "$T/orig" "$T/m.cache"
  nbdcopy "$URI" "$T/out"
  cmp "$T/orig" "$T/out"
  # Reading changed nothing on the remote.
  cmp "$T/orig" "$T/remote.img"
}

@test "writes stay in the cache until a flush; after nbdcopy --flush the remote has them" {
  require nbdcopy libnbd-bin
  remote_file 16
  ul ul "file:$T/remote.img"
  managed m --push-interval 1h "remote:unix:$WSOCK"
  random_file "$T/new" 8
  nbdcopy "$T/new" "$URI"
  # The clients see the write at once ...
  nbdcopy "$URI" "$T/out"
  cmp -n $((8 * MIB)) "$T/new" "$T/out"
  # ... the remote does not, even a while later.
  sleep 1
  cmp "$T/orig" "$T/remote.img"
  nbdcopy --flush "$T/new" "$URI"
  cmp -n $((8 * MIB)) "$T/new" "$T/remote.img"
  cmp -i $((8 * MIB)) "$T/orig" "$T/remote.img"
}

@test "a write with FUA reaches the remote before its reply, and only its own chunks are pushed" {
  require nbdsh python3-libnbd
  remote_file 16
  ul ul "file:$T/remote.img"
  managed m --push-interval 1h "remote:unix:$WSOCK"
  # One connection, no flush: A without FUA, B with FUA; the remote is
  # compared while the connection is still open (libnbd does not flush on
  # close, but the shutdown of nbd-serve would).
  patched "$T/want" "$T/orig" $((8 * MIB)) 4096 273
  nbdsh -u "$URI" -c '
import filecmp, os
h.pwrite(b"\x55" * 4096, 0)
h.pwrite(b"\xbb" * 4096, 8 << 20, nbd.CMD_FLAG_FUA)
t = os.environ["T"]
assert filecmp.cmp(t + "/want", t + "/remote.img", shallow=False), "FUA: the remote lacks B or has A"
'
}

@test "--push-interval 200ms pushes writes to the remote without a flush" {
  require nbdcopy libnbd-bin
  remote_file 16
  ul ul "file:$T/remote.img"
  managed m --push-interval 200ms "remote:unix:$WSOCK"
  random_file "$T/new" 4
  nbdcopy "$T/new" "$URI"  # no --flush
  eventually 20 cmp -s -n $((4 * MIB)) "$T/new" "$T/remote.img"
  cmp -i $((4 * MIB)) "$T/orig" "$T/remote.img"
}

@test "--pull-workers 0 --push-workers 0: reads are right, writes never reach the remote, the old cache content is overwritten" {
  require nbdcopy libnbd-bin
  remote_file 16
  ul ul "file:$T/remote.img"
  # The cache exists and holds other bytes: it is scratch.
  random_file "$T/m.cache" 16
  managed m --pull-workers 0 --push-workers 0 "remote:unix:$WSOCK"
  sleep 0.5
  run cmp -s "$T/orig" "$T/m.cache"  # nothing is pulled unasked
  [ "$status" -ne 0 ]
  nbdcopy "$URI" "$T/out"
  cmp "$T/orig" "$T/out"
  cmp "$T/orig" "$T/m.cache"  # what was read replaced the old bytes
  random_file "$T/new" 4
  nbdcopy --flush "$T/new" "$URI"
  nbdcopy "$URI" "$T/out"
  cmp -n $((4 * MIB)) "$T/new" "$T/out"
  cmp -i $((4 * MIB)) "$T/orig" "$T/out"
  cmp "$T/orig" "$T/remote.img"
  # Not at shutdown either.
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID"
  cmp "$T/orig" "$T/remote.img"
}

@test "a partial write into chunks not pulled yet keeps their other bytes" {
  require qemu-io qemu-utils
  require nbdcopy libnbd-bin
  remote_file 4
  ul ul "file:$T/remote.img"
  managed m --pull-workers 0 "remote:unix:$WSOCK"
  run qemu-io -f raw -c 'write -P 0xab 5000 100' "$URI"
  [ "$status" -eq 0 ]
  # Across the boundary of two missing chunks (64K each): both edges.
  run qemu-io -f raw -c 'write -P 0xcd 262094 100' "$URI"
  [ "$status" -eq 0 ]
  patched "$T/expect1" "$T/orig" 5000 100 253
  patched "$T/expect" "$T/expect1" 262094 100 315
  nbdcopy "$URI" "$T/out"
  cmp "$T/expect" "$T/out"
  nbdsh -u "$URI" -c 'h.flush()'
  cmp "$T/expect" "$T/remote.img"
}

@test "managed mount usage errors exit 2 and name the problem; a cache smaller than the remote is refused" {
  remote_file 4
  ul ul "file:$T/remote.img"
  run "$NBD_SERVE" --listen "unix:$T/s.sock" --cache "$T/c" --pull-workers -1 "remote:unix:$WSOCK"
  [ "$status" -eq 2 ]
  [[ "$output" == *"--pull-workers: must be 0 or more"* ]]
  run "$NBD_SERVE" --listen "unix:$T/s.sock" --cache "$T/c" --push-workers -4 "remote:unix:$WSOCK"
  [ "$status" -eq 2 ]
  [[ "$output" == *"--push-workers: must be 0 or more"* ]]
  for opt in "--pull-workers 2" "--push-workers 2" "--chunk-size 4K" "--push-interval 2s" "--max-batch 2M"; do
    # shellcheck disable=SC2086  # option and value
    run "$NBD_SERVE" --listen "unix:$T/s.sock" $opt "remote:unix:$WSOCK"
    [ "$status" -eq 2 ]
    [[ "$output" == *"${opt%% *} needs --cache"* ]]
  done
  run "$NBD_SERVE" --listen "unix:$T/s.sock" --cache "$T/c" --chunk-size 3000 "remote:unix:$WSOCK"
  [ "$status" -eq 2 ]
  [[ "$output" == *"--chunk-size: must be a power of two"* ]]
  run "$NBD_SERVE" --listen "unix:$T/s.sock" --cache "$T/c" --push-interval 0 "remote:unix:$WSOCK"
  [ "$status" -eq 2 ]
  [[ "$output" == *"--push-interval"* ]]
  run "$NBD_SERVE" --listen "unix:$T/s.sock" --cache "$T/c" --chunk-size 64K --max-batch 4K "remote:unix:$WSOCK"
  [ "$status" -eq 2 ]
  [[ "$output" == *"--max-batch"* ]]
  run "$NBD_SERVE" --listen "unix:$T/s.sock" --cache "$T/c" --pull-workers 5000 "remote:unix:$WSOCK"
  [ "$status" -eq 2 ]
  [[ "$output" == *"at most 1024"* ]]
  # Nothing was created or opened.
  [ ! -e "$T/c" ]
  [ ! -e "$T/s.sock" ]
  truncate -s 1M "$T/small.cache"
  run "$NBD_SERVE" --listen "unix:$T/s.sock" --cache "$T/small.cache" "remote:unix:$WSOCK"
  [ "$status" -eq 1 ]
  [[ "$output" == *"smaller than the remote"* ]]
  [ ! -e "$T/s.sock" ]
  # A cache file created for the attempt is removed again.
  run "$NBD_SERVE" --listen "unix:$T/s.sock" --cache "file:$T/new.cache?size=1M" "remote:unix:$WSOCK"
  [ "$status" -eq 1 ]
  [ ! -e "$T/new.cache" ]
  # A --chunk-size above the default --max-batch takes the batch along.
  "$NBD_SERVE" --listen "unix:$T/big.sock" --cache "$T/big.cache" --chunk-size 2M "remote:unix:$WSOCK" 2>"$T/big.log" &
  PIDS+=($!)
  wait_for_socket "$T/big.sock"
}

@test "connections cut again and again while nbdcopy writes 32 MiB with --flush and reads it back: no byte is lost" {
  require nbdcopy libnbd-bin
  remote_file 64
  ul ul "file:$T/remote.img"
  # A delay, small requests, no background pulls and frequent pushes: many
  # remote requests are in flight when a cut comes.
  proxy px --connect "unix:$WSOCK" --delay 2ms
  managed m --pull-workers 0 --push-interval 100ms --max-batch 256K "remote:unix:$PSOCK"
  (while [[ ! -e $T/stop ]]; do ctl cut >/dev/null; sleep 0.1; done) &
  PIDS+=($!)
  random_file "$T/new" 32
  nbdcopy --requests=1 --request-size=262144 --flush "$T/new" "$URI"
  cmp -n $((32 * MIB)) "$T/new" "$T/remote.img"
  # The second half was never read: every chunk of it is fetched now.
  nbdcopy --requests=1 --request-size=262144 "$URI" "$T/out"
  touch "$T/stop"
  cmp -n $((32 * MIB)) "$T/new" "$T/out"
  cmp -i $((32 * MIB)) "$T/orig" "$T/out"
  cmp -i $((32 * MIB)) "$T/orig" "$T/remote.img"
  # The cuts did hit the connections.
  grep -q 'connection lost' "$T/m.log"
}

@test "a remote down longer than timeout= fails reads of missing chunks, then works again once it is back, without a restart" {
  require qemu-io qemu-utils
  require nbdcopy libnbd-bin
  remote_file 4
  ul ul "file:$T/remote.img"
  proxy px --connect "unix:$WSOCK"
  managed m --pull-workers 0 "remote:unix:$PSOCK?timeout=2s"
  ctl down
  ctl cut
  SECONDS=0
  run qemu-io -f raw -c 'read 1M 4K' "$URI"
  [ "$status" -ne 0 ]
  [[ "$output" == *"Input/output error"* ]]
  ((SECONDS >= 1))  # it waited for the remote first
  grep -q 'READ at 1048576 failed: .*no connection for' "$T/m.log"
  kill -0 "$SERVER_PID"
  ctl up
  eventually 20 qemu-io -f raw -c 'read 1M 4K' "$URI"
  kill -0 "$SERVER_PID"
  nbdcopy "$URI" "$T/out"
  cmp "$T/orig" "$T/out"
}

@test "a remote error reaches the client as an error and nbd-serve logs why" {
  require qemu-io qemu-utils
  require nbdcopy libnbd-bin
  # A read-only remote gives a read-only export: writes are refused.
  remote_file 4
  ul ulro --read-only "file:$T/remote.img"
  managed mro "remote:unix:$WSOCK"
  [[ "$(nbdinfo --json "$URI")" == *'"is_read_only": true'* ]]
  random_file "$T/new" 1
  run nbdcopy --flush "$T/new" "$URI"
  [ "$status" -ne 0 ]
  cmp "$T/orig" "$T/remote.img"
  # A writable remote whose store fails a write: chunk 16 (1M) of ram-ul's
  # dir: store cannot be created, its name is taken by a directory.
  ul ul "dir:$T/d?size=4M&chunk=64K"
  managed m --pull-workers 0 --push-interval 1h "remote:unix:$WSOCK"
  mkdir "$T/d/0000000000000010"
  run qemu-io -f raw -c 'write -P 0x11 1M 64K' -c flush "$URI"
  [ "$status" -ne 0 ]
  grep -q 'push failed.*the remote says: .*Is a directory' "$T/m.log"
  grep -q 'at 1048576 failed: push dirty chunks.*Is a directory' "$T/m.log"
  random_file "$T/new" 4
  run nbdcopy --flush "$T/new" "$URI"
  [ "$status" -ne 0 ]
  [[ "$output" == *"flush"* ]]
  grep -q 'FLUSH at 0 failed: push dirty chunks.*Is a directory' "$T/m.log"
  kill -0 "$SERVER_PID"
}

@test "a remote restarted with a new memory store: reads of missing chunks fail (not zeros), the log says its content is gone" {
  require qemu-io qemu-utils
  ul ul mem:16M
  managed m --pull-workers 0 "remote:unix:$WSOCK"
  run qemu-io -f raw -c 'write -P 0x11 0 1M' -c flush "$URI"
  [ "$status" -eq 0 ]
  kill -TERM "$UL_PID"
  wait "$UL_PID" || true
  ul_again ul2 mem:16M
  run qemu-io -f raw -c 'read 8M 64K' "$URI"
  [ "$status" -ne 0 ]
  [[ "$output" == *"Input/output error"* ]]
  grep -q 'content is gone' "$T/m.log"
  grep -q 'READ at 8388608 failed: .*content is gone' "$T/m.log"
  # What is local is still served.
  run qemu-io -f raw -c 'read -P 0x11 0 1M' "$URI"
  [ "$status" -eq 0 ]
  kill -0 "$SERVER_PID"
}

@test "a partial write whose first chunk cannot be fetched leaves the second one readable" {
  # Regression: a write over parts of two missing chunks claims both; when
  # the first fetch failed, the second stayed claimed for ever and every
  # later read of it hung.
  require qemu-io qemu-utils
  ul ul "dir:$T/d?size=4M&chunk=64K"
  mkdir "$T/d/0000000000000000"  # chunk 0 cannot be read
  managed m --pull-workers 0 "remote:unix:$WSOCK"
  run timeout 10 qemu-io -f raw -c 'write -P 0x11 65436 200' "$URI"
  [ "$status" -ne 0 ]
  [ "$status" -ne 124 ]
  run timeout 10 qemu-io -f raw -c 'read -P 0 64K 4K' "$URI"
  [ "$status" -eq 0 ]
}

@test "examples/managed-mount.sh runs to OK" {
  require nbdcopy libnbd-bin
  RAM_UL=$RAM_UL NBD_SERVE=$NBD_SERVE run "$ROOT/examples/managed-mount.sh"
  [ "$status" -eq 0 ]
  [[ "$output" == *"OK"* ]]
}
