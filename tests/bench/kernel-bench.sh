#!/bin/bash
# kernel-bench.sh: runs INSIDE the run-in-vm guest (bash copied in with
# --bin bash, for $EPOCHREALTIME). The same dd read and write through
# /dev/nbdN, once with nbd-attach + nbd-serve and once with nbd-client +
# nbdkit (file plugin) on the same backing file, interleaved, ROUNDS times;
# plus the time from start to device ready. Prints "RESULT <row> <setup>
# <round> <value>" lines; tests/bench/run-kernel-bench turns them into a
# table. Software emulation makes absolute numbers meaningless: only the
# ratios between the two setups, measured in the same run, mean something.
#
# Usage (guest): kernel-bench.sh ROOT SIZE_MIB ROUNDS
set -uo pipefail
ROOT=$1 SIZE_MIB=$2 ROUNDS=$3
NBD_SERVE=$ROOT/build/bin/nbd-serve
NBD_ATTACH=$ROOT/build/bin/nbd-attach
IMG=/tmp/bench.img
cd /tmp

now() { echo "${EPOCHREALTIME/./}"; }  # microseconds
fail() { echo "FAIL - $*"; exit 1; }

dd if=/dev/urandom of=$IMG bs=1M count="$SIZE_MIB" 2>/dev/null || fail "make the image"

# ready_wait DEV: until the device shows the export's size (nbd-client
# returns before that on some paths; nbd-attach prints only after it).
ready_wait() {
  local want=$((SIZE_MIB * 2048)) i
  for i in $(seq 1 2000); do
    [ "$(cat /sys/block/${1#/dev/}/size 2>/dev/null)" = "$want" ] && return 0
    sleep 0.005
  done
  fail "$1 never became ready"
}

# measure SETUP ROUND DEV: dd write then read through DEV, O_DIRECT, 1 MiB.
measure() {
  local setup=$1 round=$2 dev=$3 t0 t1
  t0=$(now)
  dd if=$IMG of="$dev" bs=1M count="$SIZE_MIB" oflag=direct 2>/dev/null || fail "$setup write"
  t1=$(now)
  echo "RESULT seq-write $setup $round $(( SIZE_MIB * 1000000 / (t1 - t0) ))"
  sync
  echo 3 >/proc/sys/vm/drop_caches
  t0=$(now)
  dd if="$dev" of=/dev/null bs=1M count="$SIZE_MIB" iflag=direct 2>/dev/null || fail "$setup read"
  t1=$(now)
  echo "RESULT seq-read $setup $round $(( SIZE_MIB * 1000000 / (t1 - t0) ))"
}

memsync_round() {
  local round=$1 t0 t1 dev
  # Start to ready with the server spawned by the attacher (direct mount).
  t0=$(now)
  dev=$("$NBD_ATTACH" -- "$NBD_SERVE" "$IMG") || fail "nbd-attach spawn"
  t1=$(now)
  echo "RESULT ready-spawn memsync $round $(( (t1 - t0) / 1000 ))"
  measure memsync "$round" "$dev"
  "$NBD_ATTACH" --detach "$dev" || fail "detach"
  sleep 0.3
  # Start to ready against a running server: the attach step alone.
  "$NBD_SERVE" --listen unix:/tmp/m.sock "$IMG" 2>/dev/null &
  local srv=$!
  while [ ! -S /tmp/m.sock ]; do sleep 0.01; done
  t0=$(now)
  dev=$("$NBD_ATTACH" unix:/tmp/m.sock) || fail "nbd-attach unix"
  t1=$(now)
  echo "RESULT ready-attach memsync $round $(( (t1 - t0) / 1000 ))"
  "$NBD_ATTACH" --detach "$dev" || fail "detach"
  kill $srv; wait $srv 2>/dev/null
  rm -f /tmp/m.sock
}

peer_round() {
  local round=$1 t0 t1 dev=/dev/nbd7
  # Start to ready: nbdkit then nbd-client, as a script would do it.
  t0=$(now)
  nbdkit -U /tmp/k.sock -f file "$IMG" 2>/dev/null &
  local srv=$!
  while [ ! -S /tmp/k.sock ]; do sleep 0.01; done
  nbd-client -unix /tmp/k.sock "$dev" >/dev/null 2>&1 || fail "nbd-client"
  ready_wait "$dev"
  t1=$(now)
  echo "RESULT ready-spawn peer $round $(( (t1 - t0) / 1000 ))"
  measure peer "$round" "$dev"
  nbd-client -d "$dev" >/dev/null 2>&1 || fail "nbd-client -d"
  sleep 0.3
  # The attach step alone, against the running nbdkit.
  t0=$(now)
  nbd-client -unix /tmp/k.sock "$dev" >/dev/null 2>&1 || fail "nbd-client again"
  ready_wait "$dev"
  t1=$(now)
  echo "RESULT ready-attach peer $round $(( (t1 - t0) / 1000 ))"
  nbd-client -d "$dev" >/dev/null 2>&1
  kill $srv; wait $srv 2>/dev/null
  rm -f /tmp/k.sock
  sleep 0.3
}

for r in $(seq 1 "$ROUNDS"); do
  # Alternate who goes first, so drift in the VM hits both alike.
  if [ $((r % 2)) = 1 ]; then memsync_round "$r"; peer_round "$r"
  else peer_round "$r"; memsync_round "$r"; fi
done
echo BENCH-DONE
