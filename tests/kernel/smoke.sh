#!/bin/sh
# Kernel smoke batch: runs INSIDE the run-in-vm guest (busybox sh, root).
# Proves that build/bin/nbd-serve works with the real kernel NBD driver,
# driven by Debian's nbd-client in netlink mode:
#   - unix socket attach, size, 8 MiB O_DIRECT round trip, backing file check
#   - TCP 127.0.0.1 attach with 4 connections (needs NBD_FLAG_CAN_MULTI_CONN)
#   - read-only export: reads work, writes through /dev/nbdX fail
#   - nbd-client -d detaches (size 0), SIGTERM stops nbd-serve with status 0
#   - memsync's own attach path (the library pieces of nbd-attach, driven by
#     build/tests/nbd-netlink-attach): client handshake, netlink CONNECT,
#     STATUS and DISCONNECT
# Host side (from the repo root): tests/kernel/run-smoke, which runs
#   tests/vm/run-in-vm --files build/bin --files tests/kernel --bin nbd-client \
#     --modules nbd -- tests/kernel/smoke.sh
# Prints one "ok - ..." line per verdict and ALL-OK at the end; on a failure
# it prints "FAIL - ..." plus the server logs and kernel nbd messages (on
# stderr) and exits non-zero. Data is compared here: the serial line is slow.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
NBD_SERVE=$here/../../build/bin/nbd-serve   # copied in with --files build/bin
NL_ATTACH=$here/../../build/tests/nbd-netlink-attach   # --files build/tests
MiB=1048576
step="start"
SERVERS=""

ok() { echo "ok - $*"; }
fail() { echo "FAIL - $*"; exit 1; }

on_exit() {
  rc=$?
  [ "$rc" -eq 0 ] && return 0
  echo "FAIL - exit status $rc during: $step"
  {
    for f in /tmp/*.log; do
      [ -f "$f" ] || continue
      echo "----- $f"; tail -n 20 "$f"
    done
    echo "----- kernel messages about nbd"
    dmesg | grep -i nbd | tail -n 20
  } >&2
  for p in $SERVERS; do kill "$p" 2>/dev/null || true; done
  return "$rc"
}
trap on_exit EXIT

LOG_DIR=/tmp
. "$here/servers.sh"

sectors() { cat "/sys/block/$1/size"; }

# no nbd-client process may be left: in netlink mode the kernel owns the sockets
check_netlink() {
  if pgrep nbd-client >/dev/null; then fail "$1: nbd-client still running (ioctl mode?)"; fi
}

detach() {
  nbd-client -d "/dev/$1" >/dev/null 2>&1 || fail "nbd-client -d /dev/$1 failed"
  i=0
  while [ "$(sectors "$1")" != 0 ]; do
    i=$((i + 1)); [ $i -lt 50 ] || fail "$1 size is $(sectors "$1") sectors after nbd-client -d"
    sleep 0.1
  done
  if nbd-client -c "/dev/$1" >/dev/null 2>&1; then fail "nbd-client -c /dev/$1 still says connected"; fi
  ok "$1 detached with nbd-client -d: size 0, not connected"
}

[ -x "$NBD_SERVE" ] || fail "no nbd-serve at $NBD_SERVE (build it: make all)"
command -v nbd-client >/dev/null || fail "no nbd-client in the guest (run-in-vm --bin nbd-client)"
[ -b /dev/nbd0 ] || fail "no /dev/nbd0: nbd module not loaded (run-in-vm --modules nbd)"

dd if=/dev/urandom of=/tmp/pattern bs=1M count=8 2>/dev/null
dd if=/dev/urandom of=/tmp/pattern2 bs=1M count=8 2>/dev/null
dd if=/dev/zero of=/tmp/zero24 bs=1M count=24 2>/dev/null

# ------------------------------------------------------------ unix socket
step="unix: start nbd-serve file:/tmp/disk.img?size=32M"
start_server unix --listen unix:/tmp/nbd.sock 'file:/tmp/disk.img?size=32M'
UNIX_PID=$PID
wait_ready unix "$UNIX_PID"
[ "$(stat -c %s /tmp/disk.img)" = $((32 * MiB)) ] || fail "disk.img is $(stat -c %s /tmp/disk.img) bytes, want 32 MiB"
ok "nbd-serve created the 32 MiB backing file and listens on unix:/tmp/nbd.sock"

step="unix: nbd-client -u attach"
nbd-client -u /tmp/nbd.sock /dev/nbd0 >/dev/null 2>&1 || fail "nbd-client -u /tmp/nbd.sock /dev/nbd0 failed"
check_netlink nbd0
[ "$(sectors nbd0)" = 65536 ] || fail "/sys/block/nbd0/size is $(sectors nbd0), want 65536 (32 MiB)"
nbd-client -c /dev/nbd0 >/dev/null || fail "nbd-client -c /dev/nbd0: not connected"
ok "nbd0 attached over unix socket (netlink): 65536 sectors"

step="unix: O_DIRECT round trip"
dd if=/tmp/pattern of=/dev/nbd0 bs=1M oflag=direct 2>/dev/null || fail "O_DIRECT write to nbd0 failed"
sync; echo 3 >/proc/sys/vm/drop_caches
dd if=/dev/nbd0 of=/tmp/back bs=1M count=8 iflag=direct 2>/dev/null || fail "O_DIRECT read from nbd0 failed"
cmp -s /tmp/pattern /tmp/back || fail "nbd0: data read back differs from the pattern written"
ok "nbd0: 8 MiB written with O_DIRECT, caches dropped, read back identical"
head -c $((8 * MiB)) /tmp/disk.img | cmp -s - /tmp/pattern || fail "backing file differs from the pattern"
dd if=/tmp/disk.img bs=1M skip=8 2>/dev/null | cmp -s - /tmp/zero24 || fail "backing file beyond 8 MiB is not all zero"
ok "backing file holds the pattern byte for byte, the rest still zero"

# ------------------------------------------------------------ TCP, 4 connections
step="tcp: start nbd-serve on 127.0.0.1:10809"
start_server tcp --listen tcp:127.0.0.1:10809 'file:/tmp/disk2.img?size=32M'
TCP_PID=$PID
wait_ready tcp "$TCP_PID"

step="tcp: nbd-client -C 4 attach"
nbd-client 127.0.0.1 10809 /dev/nbd1 -C 4 >/dev/null 2>&1 ||
  fail "nbd-client 127.0.0.1 10809 /dev/nbd1 -C 4 failed (kernel refuses >1 connection without CAN_MULTI_CONN)"
check_netlink nbd1
[ "$(sectors nbd1)" = 65536 ] || fail "/sys/block/nbd1/size is $(sectors nbd1), want 65536"
conns=$(grep -c 'handshake done' /tmp/tcp.log || true)
[ "$conns" = 4 ] || fail "nbd-serve saw $conns finished handshakes on TCP, want 4"
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
flags=$(sed -n 's/^Hex: //p' /sys/kernel/debug/nbd/nbd1/flags 2>/dev/null || true)
[ -n "$flags" ] || fail "cannot read the export flags from /sys/kernel/debug/nbd/nbd1/flags"
[ $((flags & 0x100)) -ne 0 ] || fail "export flags $flags lack NBD_FLAG_CAN_MULTI_CONN (0x100)"
ok "nbd1 attached over TCP 127.0.0.1 with 4 connections (netlink), flags $flags include CAN_MULTI_CONN"

step="tcp: O_DIRECT round trip over 4 connections"
# 64 KiB requests with 4 writers in parallel: the kernel spreads them over the connections
pids=""
for k in 0 1 2 3; do
  dd if=/tmp/pattern2 of=/dev/nbd1 bs=64k skip=$((k * 32)) seek=$((k * 32)) count=32 \
     oflag=direct conv=notrunc 2>/dev/null &
  pids="$pids $!"
done
for p in $pids; do wait "$p" || fail "an O_DIRECT writer on nbd1 failed"; done
sync; echo 3 >/proc/sys/vm/drop_caches
dd if=/dev/nbd1 of=/tmp/back2 bs=64k count=128 iflag=direct 2>/dev/null || fail "O_DIRECT read from nbd1 failed"
cmp -s /tmp/pattern2 /tmp/back2 || fail "nbd1: data read back differs from the pattern written"
head -c $((8 * MiB)) /tmp/disk2.img | cmp -s - /tmp/pattern2 || fail "TCP backing file differs from the pattern"
ok "nbd1: 8 MiB written in parallel with O_DIRECT, read back identical, backing file matches"

step="tcp: discard (NBD_CMD_TRIM)"
blkdiscard -o 0 -l $MiB /dev/nbd1 || fail "blkdiscard of the first MiB of nbd1 failed"
sync; echo 3 >/proc/sys/vm/drop_caches
dd if=/dev/nbd1 of=/tmp/back2 bs=1M skip=1 count=7 iflag=direct 2>/dev/null || fail "O_DIRECT read from nbd1 failed"
dd if=/tmp/pattern2 bs=1M skip=1 2>/dev/null | cmp -s - /tmp/back2 || fail "blkdiscard of the first MiB changed data beyond it"
ok "nbd1: blkdiscard of 1 MiB succeeds and leaves the data after it intact"

# ------------------------------------------------------------ read-only export
step="ro: start nbd-serve --read-only on the unix disk"
start_server ro --read-only --listen unix:/tmp/ro.sock file:/tmp/disk.img
RO_PID=$PID
wait_ready ro "$RO_PID"
nbd-client -u /tmp/ro.sock /dev/nbd2 >/dev/null 2>&1 || fail "nbd-client -u /tmp/ro.sock /dev/nbd2 failed"
check_netlink nbd2
[ "$(cat /sys/block/nbd2/ro)" = 1 ] || fail "/sys/block/nbd2/ro is $(cat /sys/block/nbd2/ro): read-only flag not honoured"
dd if=/dev/nbd2 of=/tmp/back3 bs=1M count=8 iflag=direct 2>/dev/null || fail "O_DIRECT read from read-only nbd2 failed"
cmp -s /tmp/pattern /tmp/back3 || fail "nbd2 (read-only) reads differ from the data on disk"
roflags=$(sed -n 's/^Hex: //p' /sys/kernel/debug/nbd/nbd2/flags 2>/dev/null || true)
if [ -z "$roflags" ] || [ $((roflags & 0x2)) -eq 0 ]; then
  fail "export flags '$roflags' of nbd2 lack NBD_FLAG_READ_ONLY (0x2)"
fi
ok "nbd2 attached to a --read-only export: flags $roflags include READ_ONLY, device ro, reads the same data"
step="ro: write must fail"
if dd if=/tmp/pattern2 of=/dev/nbd2 bs=64k count=1 oflag=direct conv=notrunc 2>/dev/null; then
  fail "an O_DIRECT write to read-only nbd2 succeeded"
fi
if dd if=/tmp/pattern2 of=/dev/nbd2 bs=64k count=1 conv=fsync,notrunc 2>/dev/null; then
  fail "a buffered write + fsync to read-only nbd2 succeeded"
fi
head -c $((8 * MiB)) /tmp/disk.img | cmp -s - /tmp/pattern || fail "backing file changed through the read-only export"
ok "writes to nbd2 fail (direct and buffered) and the backing file is unchanged"

# ------------------------------------------------- memsync's own attach path
step="own netlink attach"
dd if=/dev/zero of=/tmp/own.img bs=$MiB count=16 2>/dev/null
start_server own --listen unix:/tmp/own.sock file:/tmp/own.img
OWN_PID=$PID
wait_ready own "$OWN_PID"
own_dev=$("$NL_ATTACH" unix:/tmp/own.sock) || fail "nbd-netlink-attach could not attach"
own=${own_dev#/dev/}
[ "$(sectors "$own")" -eq 32768 ] || fail "$own_dev has $(sectors "$own") sectors, want 32768"
"$NL_ATTACH" --status | grep -qx "${own#nbd} connected" || fail "netlink STATUS does not list $own_dev as connected"
dd if=/tmp/pattern of="$own_dev" bs=$MiB oflag=direct 2>/dev/null || fail "write to $own_dev failed"
head -c $((8 * MiB)) /tmp/own.img | cmp -s - /tmp/pattern || fail "own.img does not hold the pattern"
"$NL_ATTACH" --disconnect "${own#nbd}" || fail "netlink DISCONNECT of $own_dev failed"
i=0
while [ "$(sectors "$own")" -ne 0 ]; do
  i=$((i + 1)); [ $i -lt 50 ] || fail "$own_dev size is $(sectors "$own") after netlink DISCONNECT"
  sleep 0.1
done
ok "memsync's own attach: handshake + netlink CONNECT of $own_dev, STATUS connected, 8 MiB O_DIRECT write lands in the file, DISCONNECT to size 0"

# ------------------------------------------------------------ detach, stop
step="detach"
detach nbd0
detach nbd1
detach nbd2

step="stop servers"
stop_server unix "$UNIX_PID"
ok "nbd-serve (unix) exits 0 on SIGTERM after the client is gone"
stop_server tcp "$TCP_PID"
ok "nbd-serve (tcp) exits 0 on SIGTERM after the client is gone"
stop_server ro "$RO_PID"
ok "nbd-serve (ro) exits 0 on SIGTERM after the client is gone"
stop_server own "$OWN_PID"
ok "nbd-serve (own) exits 0 on SIGTERM after the client is gone"
SERVERS=""

step="server logs"
for name in unix tcp ro own; do
  # anything but the -v progress lines is a warning or an error
  w=$(grep -vE '^nbd-serve: (serving |new connection$|handshake done: |client sent DISC$|connection closed$|caught [A-Za-z]+, shutting down$)' \
      "/tmp/$name.log" || true)
  [ -z "$w" ] || fail "nbd-serve ($name) logged: $w"
done
ok "nbd-serve logged no warnings or errors"

step="kernel log"
# A request slower than the kernel's timeout is retried ("Connection timed
# out, retrying"): on a loaded host under software emulation that happens
# without anything being wrong, and the data checks above would have caught
# a request that never completed. Everything else counts.
slow=$(dmesg | grep -iE 'nbd.*timed out, retrying' || true)
[ -z "$slow" ] || echo "note: slow requests were retried: $slow" >&2
bad=$(dmesg | grep -iE 'nbd' | grep -viE 'timed out, retrying' |
  grep -iE 'error|fail|dead|timed out|unexpected|invalid|WARN' || true)
[ -z "$bad" ] || fail "kernel complained about nbd: $bad"
ok "no nbd errors in the kernel log"

echo ALL-OK
