#!/bin/sh
# Kernel batch for nbd-attach: runs INSIDE the run-in-vm guest (busybox sh,
# root), after smoke.sh, and drives build/bin/nbd-attach against the real
# kernel NBD driver, with build/bin/nbd-serve as the server.
#
#   tests/kernel/attach.sh quick    (make check: well under a minute)
#     - unix endpoint: attach prints the device, 4 MiB O_DIRECT round trip
#       checked against the backing file, --list (connected, backend
#       identifier), --detach to size 0
#     - spawn mode (-- nbd-serve FILE): round trip; --detach ends the
#       supervising nbd-attach and its server
#     - spawn mode with -C 4 and --pidfile: 4 connections, I/O, SIGTERM to
#       the pid file's pid detaches and removes the pid file; --foreground
#       exits 0 on SIGTERM
#     - max_sectors_kb follows the server's --max-payload; read-only attach
#     - errors: exact exit status and message, nothing left attached
#     - last: a spawn-mode device detached with --detach is reported as a
#       detach (log, --foreground exit status 0), not as a dead server (full:
#       an --ioctl one too)
#   tests/kernel/attach.sh full     (make check-long: quick, then)
#     - ext4: mkfs, mount, write, umount, detach, reattach, e2fsck -fn,
#       contents intact (needs --modules "nbd ext4 crc32c_generic",
#       --bin mkfs.ext4 --bin e2fsck)
#     - writes through mmap (build/tests/mmap-check) reach the backing file
#     - --swap: locked memory, OOM-proof; mkswap, swapon, swap out under a
#       cgroup memory limit, swapoff (the server's store is a brd ramdisk:
#       --modules brd --append "brd.rd_nr=1 brd.rd_size=98304")
#     - a spawned server killed: the device is detached, exit status 3
#     - an endpoint server killed: I/O fails, --detach cleans up
#     - --persist: the server killed and restarted; I/O issued during the
#       outage completes and lands in the backing file
#     - --ioctl: round trip and --detach
#     - nbds:// with a pre-shared key, relayed by nbd-attach
#     - the in-process attach library call (build/tests/attach-store)
#     - examples/direct-mount.sh (needs --bin bash --bin debugfs)
# Host side: tests/kernel/run-smoke [quick|full] (from the repo root), which
# runs smoke.sh and this script in one VM with --files build/bin
# --files build/tests --files tests/kernel.
# Prints one "ok - ..." line per verdict and ALL-OK at the end; on a failure
# it prints "FAIL - ..." plus the logs in /tmp/attach, the NBD devices and
# processes and the kernel's nbd messages (on stderr), and exits non-zero.
# Data is compared here: the serial line is slow.
set -eu

level=${1:-quick}
case $level in quick|full) ;; *) echo "usage: $0 quick|full" >&2; exit 2 ;; esac

here=$(cd "$(dirname "$0")" && pwd)
BIN=$(cd "$here/../../build/bin" && pwd)        # --files build/bin
TESTS=$(cd "$here/../../build/tests" && pwd)    # --files build/tests
PATH=$BIN:$PATH                                 # spawn mode finds nbd-serve here
export PATH
NBD_ATTACH=$BIN/nbd-attach
NBD_SERVE=$BIN/nbd-serve
MMAP_CHECK=$TESTS/mmap-check
D=/tmp/attach
MiB=1048576
step="start"
SERVERS=""

ok() { echo "ok - nbd-attach: $*"; }
fail() { echo "FAIL - nbd-attach: $*"; exit 1; }

on_exit() {
  rc=$?
  [ "$rc" -eq 0 ] && return 0
  echo "FAIL - attach.sh $level: exit status $rc during: $step"
  {
    for f in "$D"/*.log; do
      [ -f "$f" ] || continue
      echo "----- $f"; tail -n 25 "$f"
    done
    echo "----- NBD devices in use"
    "$NBD_ATTACH" --list 2>&1 | grep -v ' disconnected ' || true
    echo "----- nbd processes"
    for p in /proc/[0-9]*; do
      c=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null || true)
      case $c in *nbd-*) echo "${p#/proc/} $c" ;; esac
    done
    echo "----- kernel messages about nbd"
    dmesg | grep -i nbd | tail -n 25
  } >&2
  grep -q "^/dev/nbd" /proc/swaps 2>/dev/null && swapoff -a 2>/dev/null
  for m in $(grep ' /tmp/attach/' /proc/mounts | cut -d' ' -f2); do umount "$m" 2>/dev/null || true; done
  for p in $SERVERS; do kill "$p" 2>/dev/null || true; done
  return "$rc"
}
trap on_exit EXIT

# ------------------------------------------------------------ helpers
LOG_DIR=$D
. "$here/servers.sh"

name_of() { echo "${1#/dev/}"; }
sectors() { cat "/sys/block/$(name_of "$1")/size"; }

# is_nbd DEV: DEV is /dev/nbdN and a block device
is_nbd() {
  case $1 in /dev/nbd[0-9]*) [ -b "$1" ] ;; *) return 1 ;; esac
}

# wait_detached DEV [SECONDS]: size 0 and no pid in sysfs within SECONDS (5)
wait_detached() {
  n=$(name_of "$1"); i=0; lim=$((${2:-5} * 10))
  while [ "$(sectors "$1")" != 0 ] || [ -e "/sys/block/$n/pid" ]; do
    i=$((i + 1)); [ $i -lt $lim ] || fail "$1 still attached ($(sectors "$1") sectors) after ${2:-5} s"
    sleep 0.1
  done
}

# wait_gone PID WHAT [SECONDS]: the process is gone within SECONDS (5)
wait_gone() {
  i=0; lim=$((${3:-5} * 10))
  while [ -d "/proc/$1" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; do
    i=$((i + 1)); [ $i -lt $lim ] || fail "$2 (pid $1) still running after ${3:-5} s"
    sleep 0.1
  done
}

# wait_file FILE WHAT [SECONDS]: FILE exists and is not empty
wait_file() {
  i=0; lim=$((${3:-10} * 10))
  while [ ! -s "$1" ]; do
    i=$((i + 1)); [ $i -lt $lim ] || fail "$2: nothing in $1 after ${3:-10} s"
    sleep 0.1
  done
}

# child_of PID: the pids of PID's children
child_of() {
  parent=$1
  for s in /proc/[0-9]*/stat; do
    line=$(cat "$s" 2>/dev/null) || continue
    set -- $line
    [ "$4" = "$parent" ] && echo "$1"
  done
  return 0
}

# sup_pid DEV: the pid the kernel shows for DEV (the attaching process)
sup_pid() { cat "/sys/block/$(name_of "$1")/pid"; }

# list_field DEV COLUMN: a column of DEV's line in nbd-attach --list
# (2 state, 3 size, 4 pid, 5.. backend)
list_line() { "$NBD_ATTACH" --list | awk -v d="$1" '$1 == d'; }

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# roundtrip DEV BACKING WHAT: 4 MiB pattern written at 1 MiB with O_DIRECT,
# caches dropped, read back, compared; the backing file holds it too.
roundtrip() {
  dd if="$D/pattern" of="$1" bs=1M seek=1 oflag=direct conv=notrunc 2>"$D/dd.err" ||
    fail "$3: O_DIRECT write to $1 failed: $(cat "$D/dd.err")"
  drop_caches
  dd if="$1" of="$D/back" bs=1M skip=1 count=4 iflag=direct 2>"$D/dd.err" ||
    fail "$3: O_DIRECT read from $1 failed: $(cat "$D/dd.err")"
  cmp -s "$D/pattern" "$D/back" || fail "$3: data read back from $1 differs from the pattern written"
  dd if="$2" bs=1M skip=1 count=4 2>/dev/null | cmp -s - "$D/pattern" ||
    fail "$3: the backing file $2 does not hold the pattern at 1 MiB"
}

# expect_error WANT_RC WANT_MESSAGE ARGS...: nbd-attach ARGS fails with exit
# status WANT_RC and exactly WANT_MESSAGE on stderr, prints nothing on
# stdout, and leaves no more devices attached than before.
expect_error() {
  want_rc=$1; want_msg=$2; shift 2
  before=$(connected_count)
  rc=0
  "$NBD_ATTACH" "$@" >"$D/err.out" 2>"$D/err.err" || rc=$?
  [ "$rc" = "$want_rc" ] || fail "nbd-attach $* exited $rc, want $want_rc (stderr: $(cat "$D/err.err"))"
  [ "$(cat "$D/err.err")" = "$want_msg" ] ||
    fail "nbd-attach $* said '$(cat "$D/err.err")', want '$want_msg'"
  [ ! -s "$D/err.out" ] || fail "nbd-attach $* printed '$(cat "$D/err.out")' on stdout"
  [ "$(connected_count)" = "$before" ] || fail "nbd-attach $* left a device attached"
}

connected_count() {
  n=0
  for p in /sys/block/nbd*/pid; do [ -e "$p" ] && n=$((n + 1)); done
  echo $n
}

# no_nbd_processes WHAT: no nbd-attach or nbd-serve process other than the
# servers this script started
stray_processes() {
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    case " $SERVERS " in *" $pid "*) continue ;; esac
    [ "$(cut -d' ' -f3 "$p/stat" 2>/dev/null)" = Z ] && continue
    c=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null || true)
    case $c in *nbd-attach*|*nbd-serve*) echo "$pid: $c" ;; esac
  done
  return 0
}

# detach_outcome: a device detached by someone else (nbd-attach --detach)
# was detached on request: its supervisor logs "detached", warns nothing and
# exits 0 (3 is "the server went away"), although a spawned server exits too
# once the kernel has sent it NBD_CMD_DISC. Checked last, and each failure is
# printed without stopping, so that it hides no other verdict.
LATE_FAILS=0
late_fail() { echo "FAIL - nbd-attach: $*"; LATE_FAILS=$((LATE_FAILS + 1)); }
detach_outcome() {
  step="detach outcome: the spawn-mode --detach of (b)"
  if w=$(grep '^nbd-attach: warning' "$D/attach-b.log"); then
    late_fail "after --detach the spawn-mode supervisor of (b) warned '$w' instead of logging a detach"
  elif ! grep -q "^nbd-attach: /dev/nbd[0-9]* detached" "$D/attach-b.log"; then
    late_fail "the spawn-mode supervisor of (b) did not log 'detached' after --detach"
  else
    ok "--detach of a spawn-mode device: the supervisor logs 'detached', no warning"
  fi
  step="detach outcome: --foreground spawn mode, --detach"
  : >"$D/o.img"; truncate -s 16M "$D/o.img"
  "$NBD_ATTACH" -v --foreground -- nbd-serve "$D/o.img" >"$D/o.dev" 2>>"$D/attach-o.log" &
  fg=$!
  wait_file "$D/o.dev" "nbd-attach --foreground"
  dev=$(cat "$D/o.dev")
  "$NBD_ATTACH" --detach "$dev" || fail "nbd-attach --detach $dev failed"
  rc=0; wait "$fg" || rc=$?
  wait_detached "$dev"
  rm -f "$D/o.img"
  if [ "$rc" = 0 ]; then
    ok "--detach of a --foreground spawn-mode device: nbd-attach exits 0"
  else
    late_fail "nbd-attach --foreground -- nbd-serve exited $rc after nbd-attach --detach $dev, want 0: $(grep warning "$D/attach-o.log")"
  fi
  if [ "$level" = full ]; then
    # The ioctl interface does not say why NBD_DO_IT returned; with an
    # endpoint (no server exit status to ask) nbd-attach documents any end
    # it did not ask for as "the server went away" (exit 3), and says so.
    step="detach outcome: the --ioctl --detach of (m)"
    if w=$(grep -E '^nbd-attach: unable' "$D/attach-m.log"); then
      late_fail "after --detach the --ioctl supervisor of (m) failed: '$w'"
    elif ! grep -q "^nbd-attach: warning: /dev/nbd[0-9]*: the kernel ended the connection to unix:" "$D/attach-m.log"; then
      late_fail "the --ioctl supervisor of (m) did not report the end of the connection: $(cat "$D/attach-m.log")"
    else
      ok "--detach of an --ioctl device: the supervisor reports the ended connection (documented exit 3)"
    fi
  fi
  step="detach outcome"
  [ "$LATE_FAILS" = 0 ] || fail "$LATE_FAILS detach outcome checks failed (FAIL lines above)"
}

[ -x "$NBD_ATTACH" ] || fail "no nbd-attach at $NBD_ATTACH (build it: make all)"
[ -x "$NBD_SERVE" ] || fail "no nbd-serve at $NBD_SERVE (build it: make all)"
[ -b /dev/nbd0 ] || fail "no /dev/nbd0: nbd module not loaded (run-in-vm --modules nbd)"

rm -rf "$D"; mkdir -p "$D"
dd if=/dev/urandom of="$D/pattern" bs=1M count=4 2>/dev/null

# ================================================================ quick
# ------------------------------------------------ (a) unix socket endpoint
step="a: start nbd-serve on unix:$D/a.sock"
start_server a --listen "unix:$D/a.sock" "file:$D/a.img?size=32M"
A_PID=$PID
wait_ready a "$A_PID"

step="a: attach unix:$D/a.sock"
dev=$("$NBD_ATTACH" -v "unix:$D/a.sock" 2>>"$D/attach-a.log") || fail "nbd-attach unix:$D/a.sock failed"
is_nbd "$dev" || fail "nbd-attach printed '$dev', not an NBD device"
[ "$(sectors "$dev")" = 65536 ] || fail "$dev has $(sectors "$dev") sectors, want 65536 (32 MiB)"
[ -z "$(stray_processes)" ] || fail "nbd-attach stays running for a plain endpoint: $(stray_processes)"
ok "unix endpoint attached: printed $dev, 65536 sectors, nbd-attach exited (the kernel holds the socket)"

step="a: round trip"
roundtrip "$dev" "$D/a.img" "unix endpoint"
[ "$(head -c $MiB "$D/a.img" | tr -d '\0' | wc -c)" = 0 ] || fail "writing at 1 MiB changed the first MiB of a.img"
ok "$dev: 4 MiB written at 1 MiB with O_DIRECT, read back identical, backing file matches byte for byte"

step="a: --list"
line=$(list_line "$dev")
set -- $line
[ "${2:-}" = connected ] || fail "--list shows '$line' for $dev, want connected"
[ "${3:-}" = 32M ] || fail "--list shows size '${3:-}' for $dev, want 32M"
[ "${5:-}" = "memsync:unix:$D/a.sock" ] || fail "--list shows backend '${5:-}' for $dev, want memsync:unix:$D/a.sock"
[ "$(cat "/sys/block/$(name_of "$dev")/backend")" = "memsync:unix:$D/a.sock" ] ||
  fail "/sys/block/$(name_of "$dev")/backend is '$(cat "/sys/block/$(name_of "$dev")/backend")'"
ok "--list shows $dev connected, 32M, backend memsync:unix:$D/a.sock"

step="a: --detach"
"$NBD_ATTACH" --detach "$dev" || fail "nbd-attach --detach $dev failed"
wait_detached "$dev"
set -- $(list_line "$dev")
[ "${2:-}" = disconnected ] || fail "--list shows $dev as '${2:-}' after --detach"
ok "--detach $dev: size 0, --list says disconnected"

# ------------------------------------------------ (b) spawn mode
step="b: spawn mode attach"
: >"$D/b.img"; truncate -s 32M "$D/b.img"
dev=$("$NBD_ATTACH" -v -- nbd-serve -v "$D/b.img" 2>>"$D/attach-b.log") ||
  fail "nbd-attach -- nbd-serve $D/b.img failed"
is_nbd "$dev" || fail "nbd-attach printed '$dev', not an NBD device"
[ "$(sectors "$dev")" = 65536 ] || fail "$dev has $(sectors "$dev") sectors, want 65536"
sup=$(sup_pid "$dev")
grep -q 'nbd-attach' "/proc/$sup/cmdline" 2>/dev/null || fail "the pid the kernel shows for $dev ($sup) is not a running nbd-attach"
srv=$(child_of "$sup")
[ -n "$srv" ] && grep -q nbd-serve "/proc/$srv/cmdline" || fail "the supervising nbd-attach ($sup) has no nbd-serve child"
set -- $(list_line "$dev")
[ "${2:-}" = connected ] && [ "${4:-}" = "$sup" ] || fail "--list shows '$*' for $dev, want connected with pid $sup"
[ "$(cat "/sys/block/$(name_of "$dev")/backend")" = "memsync:nbd-serve -v $D/b.img" ] ||
  fail "backend of $dev is '$(cat "/sys/block/$(name_of "$dev")/backend")'"
ok "spawn mode: printed $dev; nbd-attach ($sup) supervises nbd-serve ($srv); --list connected with its pid and the command as backend"

step="b: round trip"
roundtrip "$dev" "$D/b.img" "spawn mode"
ok "$dev (spawn mode): 4 MiB O_DIRECT round trip, backing file matches"

step="b: --detach"
"$NBD_ATTACH" --detach "$dev" || fail "nbd-attach --detach $dev failed"
wait_detached "$dev"
wait_gone "$sup" "the supervising nbd-attach"
wait_gone "$srv" "the spawned nbd-serve"
rm -f "$D/b.img"   # the guest's files are in its RAM
# how the supervisor reported this --detach is checked at the end (detach_outcome)
ok "--detach $dev (spawn mode): size 0, the supervising nbd-attach and its nbd-serve gone within 5 s"

# ------------------------------------------------ (c) 4 connections, pid file
step="c: -C 4 --pidfile spawn"
: >"$D/c.img"; truncate -s 32M "$D/c.img"
dev=$("$NBD_ATTACH" -v -C 4 --pidfile "$D/c.pid" -- nbd-serve -v "$D/c.img" 2>>"$D/attach-c.log") ||
  fail "nbd-attach -C 4 --pidfile $D/c.pid -- nbd-serve $D/c.img failed"
is_nbd "$dev" || fail "nbd-attach printed '$dev', not an NBD device"
[ -s "$D/c.pid" ] || fail "no pid file $D/c.pid once the device was printed"
sup=$(cat "$D/c.pid")
kill -0 "$sup" 2>/dev/null || fail "the pid file says $sup, which is not running"
[ "$sup" = "$(sup_pid "$dev")" ] || fail "pid file $sup, but the kernel shows pid $(sup_pid "$dev") for $dev"
conns=$(grep -c 'handshake done' "$D/attach-c.log" || true)
[ "$conns" = 4 ] || fail "nbd-serve logged $conns finished handshakes, want 4"
# the kernel gives the device one hardware queue per connection, capped at the CPU count
queues=$(ls "/sys/block/$(name_of "$dev")/mq" | wc -l)
ncpu=$(nproc); want_q=4; [ "$ncpu" -lt 4 ] && want_q=$ncpu
[ "$queues" = "$want_q" ] || fail "$dev has $queues hardware queues, want $want_q (4 connections, $ncpu CPUs)"
ok "-C 4 --pidfile: $dev with 4 handshaken connections ($queues hw queues on $ncpu CPUs), pid file holds the supervisor's pid $sup"

step="c: parallel round trip over 4 connections"
pids=""
for k in 0 1 2 3; do
  dd if="$D/pattern" of="$dev" bs=64k skip=$((k * 16)) seek=$((k * 16)) count=16 oflag=direct conv=notrunc 2>/dev/null &
  pids="$pids $!"
done
for p in $pids; do wait "$p" || fail "an O_DIRECT writer on $dev failed"; done
drop_caches
dd if="$dev" of="$D/back" bs=64k count=64 iflag=direct 2>/dev/null || fail "O_DIRECT read from $dev failed"
cmp -s "$D/pattern" "$D/back" || fail "$dev: data read back differs from the pattern"
head -c $((4 * MiB)) "$D/c.img" | cmp -s - "$D/pattern" || fail "c.img does not hold the pattern"
ok "$dev: 4 parallel O_DIRECT writers, read back identical, backing file matches"

step="c: SIGTERM to the pid file's pid"
srv=$(child_of "$sup")
kill -TERM "$sup"
wait_gone "$sup" "nbd-attach after SIGTERM"
wait_detached "$dev"
[ ! -e "$D/c.pid" ] || fail "the pid file $D/c.pid is still there after nbd-attach exited"
[ -z "$srv" ] || wait_gone "$srv" "the spawned nbd-serve after SIGTERM to nbd-attach"
grep -q "nbd-attach: $dev detached" "$D/attach-c.log" || fail "nbd-attach did not log '$dev detached' after SIGTERM"
if grep -E '^nbd-attach: (unable|warning|fatal)' "$D/attach-c.log"; then fail "nbd-attach complained on SIGTERM"; fi
rm -f "$D/c.img"
ok "SIGTERM to pid $sup: $dev detached, nbd-attach and nbd-serve gone, pid file removed, no warning"

step="c: --foreground, SIGTERM"
: >"$D/f.img"; truncate -s 16M "$D/f.img"
"$NBD_ATTACH" -v --foreground -- nbd-serve "$D/f.img" >"$D/f.dev" 2>>"$D/attach-f.log" &
fg=$!
wait_file "$D/f.dev" "nbd-attach --foreground"
dev=$(cat "$D/f.dev")
is_nbd "$dev" || fail "nbd-attach --foreground printed '$dev'"
[ "$(sup_pid "$dev")" = "$fg" ] || fail "nbd-attach --foreground: the kernel shows pid $(sup_pid "$dev"), the job is $fg"
kill -TERM "$fg"
rc=0; wait "$fg" || rc=$?
[ "$rc" = 0 ] || fail "nbd-attach --foreground exited $rc after SIGTERM, want 0"
wait_detached "$dev"
rm -f "$D/f.img"
ok "--foreground: stays in the job ($fg) it was started as, SIGTERM detaches $dev and exits 0"

# ------------------------------------------------ (d) --max-payload
step="d: nbd-serve --max-payload 1M"
start_server d --max-payload 1M --listen "unix:$D/d.sock" "file:$D/d.img?size=16M"
D_PID=$PID
wait_ready d "$D_PID"
dev=$("$NBD_ATTACH" -v "unix:$D/d.sock" 2>>"$D/attach-d.log") || fail "nbd-attach unix:$D/d.sock failed"
kb=$(cat "/sys/block/$(name_of "$dev")/queue/max_sectors_kb")
[ "$kb" = 1024 ] || fail "max_sectors_kb of $dev is $kb, want 1024 (the server's --max-payload 1M)"
dd if="$D/pattern" of="$dev" bs=4M oflag=direct 2>"$D/dd.err" || fail "a 4 MiB O_DIRECT write to $dev failed: $(cat "$D/dd.err")"
drop_caches
dd if="$dev" of="$D/back" bs=4M count=1 iflag=direct 2>/dev/null || fail "a 4 MiB O_DIRECT read from $dev failed"
cmp -s "$D/pattern" "$D/back" || fail "$dev: 4 MiB requests read back differ"
if grep -iE 'too (big|large)|error|refus' "$D/d.log"; then fail "nbd-serve refused requests above its maximum payload"; fi
"$NBD_ATTACH" --detach "$dev" || fail "nbd-attach --detach $dev failed"
wait_detached "$dev"
ok "max_sectors_kb is 1024 for a server with --max-payload 1M; 4 MiB O_DIRECT requests are split and work"

# ------------------------------------------------ (e) --read-only
step="e: --read-only"
dev=$("$NBD_ATTACH" -v --read-only "unix:$D/a.sock" 2>>"$D/attach-e.log") || fail "nbd-attach --read-only failed"
[ "$(cat "/sys/block/$(name_of "$dev")/ro")" = 1 ] || fail "$dev is not read-only in sysfs"
dd if="$dev" of="$D/back" bs=1M skip=1 count=4 iflag=direct 2>/dev/null || fail "O_DIRECT read from read-only $dev failed"
cmp -s "$D/pattern" "$D/back" || fail "read-only $dev reads differ from a.img"
cp "$D/a.img" "$D/a.before"
if dd if=/dev/urandom of="$dev" bs=64k count=1 oflag=direct conv=notrunc 2>/dev/null; then
  fail "an O_DIRECT write to read-only $dev succeeded"
fi
if dd if=/dev/urandom of="$dev" bs=64k count=1 conv=fsync,notrunc 2>/dev/null; then
  fail "a buffered write + fsync to read-only $dev succeeded"
fi
cmp -s "$D/a.img" "$D/a.before" || fail "a.img changed through a read-only attach"
rm -f "$D/a.before"
"$NBD_ATTACH" --detach "$dev" || fail "nbd-attach --detach $dev failed"
wait_detached "$dev"
ok "--read-only: $dev is ro, reads work, direct and buffered writes fail, backing file unchanged"

# ------------------------------------------------ (f) errors
step="f: errors"
expect_error 1 "nbd-attach: unable to attach: connect to unix:$D/nope.sock: No such file or directory" \
  "unix:$D/nope.sock"
ok "unknown socket: exit 1, 'unable to attach: connect to unix:$D/nope.sock: No such file or directory'"

expect_error 1 "nbd-attach: unable to attach: 'false' exited with status 1 during the handshake" -- false
sleep 0.2
[ -z "$(stray_processes)" ] || fail "nbd-attach -- false left processes behind: $(stray_processes)"
ok "-- false: exit 1, ''false' exited with status 1 during the handshake', no process left"

start_server x --name x --listen "unix:$D/x.sock" "file:$D/x.img?size=16M"
X_PID=$PID
wait_ready x "$X_PID"
expect_error 1 "nbd-attach: unable to attach: server refused export 'nope': no export named 'nope'" \
  --name nope "unix:$D/x.sock"
ok "missing export name: exit 1, 'server refused export 'nope': no export named 'nope''"

dev=$("$NBD_ATTACH" "unix:$D/a.sock" 2>>"$D/attach-f.log") || fail "nbd-attach unix:$D/a.sock failed"
expect_error 1 "nbd-attach: unable to attach unix:$D/x.sock export x: $dev is already in use" \
  --device "$dev" --name x "unix:$D/x.sock"
[ "$(list_line "$dev" | awk '{print $5}')" = "memsync:unix:$D/a.sock" ] || fail "the busy $dev changed its backend"
"$NBD_ATTACH" --detach "$dev" || fail "nbd-attach --detach $dev failed"
wait_detached "$dev"
ok "--device of a busy device: exit 1, '$dev is already in use', the device keeps its export"

expect_error 1 "nbd-attach: unable to detach $dev: $dev is not attached" --detach "$dev"
expect_error 2 "nbd-attach: usage: --persist needs netlink, not --ioctl
Try 'nbd-attach --help' for more information." --persist --ioctl "unix:$D/a.sock"
ok "--detach of a free device: exit 1; --persist --ioctl: usage error, exit 2"

if [ "$level" = quick ]; then
  step="quick: stop servers"
  stop_server a "$A_PID"; stop_server d "$D_PID"; stop_server x "$X_PID"
  SERVERS=""
  [ -z "$(stray_processes)" ] || fail "processes left: $(stray_processes)"
  [ "$(connected_count)" = 0 ] || fail "$(connected_count) NBD devices still attached"
  ok "quick batch: no nbd-attach or nbd-serve left, no device attached"
  detach_outcome
  echo ALL-OK
  exit 0
fi

# ================================================================ full
# ------------------------------------------------ (g) ext4
step="g: ext4 on an attached device"
command -v mkfs.ext4 >/dev/null || fail "no mkfs.ext4 in the guest (run-in-vm --bin mkfs.ext4)"
command -v e2fsck >/dev/null || fail "no e2fsck in the guest (run-in-vm --bin e2fsck)"
start_server g --listen "unix:$D/g.sock" "file:$D/g.img?size=64M"
G_PID=$PID
wait_ready g "$G_PID"
dev=$("$NBD_ATTACH" -v "unix:$D/g.sock" 2>>"$D/attach-g.log") || fail "nbd-attach unix:$D/g.sock failed"
mkfs.ext4 -q -F "$dev" >"$D/mkfs.log" 2>&1 || fail "mkfs.ext4 $dev failed: $(cat "$D/mkfs.log")"
mkdir -p "$D/mnt"
mount -t ext4 "$dev" "$D/mnt" 2>"$D/mount.err" || fail "mount -t ext4 $dev failed: $(cat "$D/mount.err")"
mkdir "$D/mnt/dir"
cp "$D/pattern" "$D/mnt/pattern"
for k in 1 2 3 4 5 6 7 8; do
  dd if=/dev/urandom of="$D/mnt/dir/f$k" bs=64k count=$k 2>/dev/null
done
echo "hello through nbd" >"$D/mnt/hello"
(cd "$D/mnt" && find . -type f | sort | xargs md5sum) >"$D/sums"
umount "$D/mnt" || fail "umount $dev failed"
"$NBD_ATTACH" --detach "$dev" || fail "nbd-attach --detach $dev failed"
wait_detached "$dev"
ok "ext4: mkfs.ext4, mount, 10 files written, umount, --detach"

step="g: reattach, e2fsck, contents"
dev=$("$NBD_ATTACH" -v "unix:$D/g.sock" 2>>"$D/attach-g.log") || fail "nbd-attach (again) unix:$D/g.sock failed"
e2fsck -fn "$dev" >"$D/fsck.log" 2>&1 || fail "e2fsck -fn $dev after reattach: $(tail -n 5 "$D/fsck.log")"
mount -t ext4 -o ro "$dev" "$D/mnt" 2>"$D/mount.err" || fail "mount (again) $dev failed: $(cat "$D/mount.err")"
(cd "$D/mnt" && md5sum -c "$D/sums" >"$D/md5.log" 2>&1) || fail "files differ after reattach: $(grep -v ': OK' "$D/md5.log")"
cmp -s "$D/mnt/pattern" "$D/pattern" || fail "pattern file differs after reattach"
umount "$D/mnt" || fail "umount $dev failed"
"$NBD_ATTACH" --detach "$dev" || fail "nbd-attach --detach $dev failed"
wait_detached "$dev"
e2fsck -fn "$D/g.img" >"$D/fsck.log" 2>&1 || fail "e2fsck -fn of the backing file: $(tail -n 5 "$D/fsck.log")"
rm -f "$D/g.img"
ok "ext4: reattached, e2fsck -fn clean (device and backing file), every file's md5 intact"
stop_server g "$G_PID"

# ------------------------------------------------ (h) mmap
step="h: writes through mmap"
[ -x "$MMAP_CHECK" ] || fail "no $MMAP_CHECK (make build/tests/mmap-check; run-in-vm --files build/tests)"
: >"$D/h.img"; truncate -s 16M "$D/h.img"
dev=$("$NBD_ATTACH" -v -- nbd-serve "$D/h.img" 2>>"$D/attach-h.log") || fail "nbd-attach -- nbd-serve $D/h.img failed"
"$MMAP_CHECK" "$dev" 1M 6M 4242 2>"$D/mmap.err" || fail "mmap-check $dev: $(cat "$D/mmap.err")"
"$MMAP_CHECK" --verify "$D/h.img" 1M 6M 4242 2>"$D/mmap.err" ||
  fail "after msync(MS_SYNC) the backing file lacks the mmap writes: $(cat "$D/mmap.err")"
"$NBD_ATTACH" --detach "$dev" || fail "nbd-attach --detach $dev failed"
wait_detached "$dev"
"$MMAP_CHECK" --verify "$D/h.img" 1M 6M 4242 2>"$D/mmap.err" || fail "after --detach: $(cat "$D/mmap.err")"
[ "$(head -c $MiB "$D/h.img" | tr -d '\0' | wc -c)" = 0 ] || fail "mmap writes at 1 MiB changed the first MiB"
rm -f "$D/h.img"
ok "mmap: 6 MiB written through a MAP_SHARED mapping of $dev, msync(MS_SYNC): in the backing file before and after --detach"

# ------------------------------------------------ (i) swap
# The server's store is a brd ramdisk: unlike a tmpfs file, its pages cannot
# themselves be swapped out to the device they back (tests/vm/README.md).
step="i: --swap"
[ -b /dev/ram0 ] || fail "no /dev/ram0 (run-in-vm --modules brd --append 'brd.rd_nr=1 brd.rd_size=98304')"
dev=$("$NBD_ATTACH" -v --swap -- nbd-serve /dev/ram0 2>>"$D/attach-i.log") ||
  fail "nbd-attach --swap -- nbd-serve /dev/ram0 failed"
sup=$(sup_pid "$dev"); srv=$(child_of "$sup")
[ -n "$srv" ] || fail "nbd-attach --swap ($sup) has no server child"
for p in "$sup" "$srv"; do
  lck=$(awk '/^VmLck:/ {print $2}' "/proc/$p/status")
  [ "${lck:-0}" -gt 0 ] || fail "pid $p ($(tr '\0' ' ' <"/proc/$p/cmdline")) has no locked memory (VmLck ${lck:-?} kB)"
  [ "$(cat "/proc/$p/oom_score_adj")" = -1000 ] || fail "pid $p has oom_score_adj $(cat "/proc/$p/oom_score_adj"), want -1000"
done
ok "--swap: nbd-attach ($sup) and nbd-serve ($srv) lock their memory and have oom_score_adj -1000"

step="i: mkswap, swapon, swap out, swapoff"
mkswap "$dev" >"$D/mkswap.log" 2>&1 || fail "mkswap $dev failed: $(cat "$D/mkswap.log")"
swapon "$dev" 2>"$D/swapon.err" || fail "swapon $dev failed: $(cat "$D/swapon.err")"
grep -q "^$dev " /proc/swaps || fail "$dev is not in /proc/swaps after swapon"
# squeeze a memory hog (dd's 64 MiB buffer, twice) into 32 MiB: it must swap
# to $dev. memory.high, not memory.max: above it the kernel reclaims and
# throttles, where memory.max would OOM-kill once reclaim lags behind the
# (emulated, slow) swap writes.
out0=$(awk '/^pswpout / {print $2}' /proc/vmstat)
echo +memory >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
mkdir -p /sys/fs/cgroup/hog
echo 32M >/sys/fs/cgroup/hog/memory.high || fail "cannot set a cgroup memory limit"
rc=0
timeout 120 sh -c 'echo $$ >/sys/fs/cgroup/hog/cgroup.procs && exec dd if=/dev/zero of=/dev/null bs=64M count=2' \
  2>"$D/hog.err" || rc=$?
[ "$rc" = 0 ] || fail "the memory hog failed with exit $rc (swap to $dev stuck or refused; memory.events: $(tr '\n' ' ' </sys/fs/cgroup/hog/memory.events)): $(cat "$D/hog.err")"
out1=$(awk '/^pswpout / {print $2}' /proc/vmstat)
[ "$out1" -gt "$out0" ] || fail "nothing was swapped out (pswpout $out0 -> $out1)"
swapoff "$dev" 2>"$D/swapoff.err" || fail "swapoff $dev failed: $(cat "$D/swapoff.err")"
if grep -q "^$dev " /proc/swaps; then fail "$dev still in /proc/swaps after swapoff"; fi
"$NBD_ATTACH" --detach "$dev" || fail "nbd-attach --detach $dev failed"
wait_detached "$dev"
wait_gone "$sup" "nbd-attach --swap"
if grep -E '^nbd-(serve|attach): (unable|warning)' "$D/attach-i.log"; then fail "nbd-attach or nbd-serve complained during swap"; fi
ok "swap on $dev: mkswap, swapon, $((out1 - out0)) pages swapped out by a 32 MiB cgroup, swapoff, --detach"

# ------------------------------------------------ (j) spawned server killed
step="j: spawned server killed"
: >"$D/j.img"; truncate -s 16M "$D/j.img"
"$NBD_ATTACH" -v --foreground -- nbd-serve "$D/j.img" >"$D/j.dev" 2>>"$D/attach-j.log" &
sup=$!
wait_file "$D/j.dev" "nbd-attach --foreground -- nbd-serve"
dev=$(cat "$D/j.dev")
srv=$(child_of "$sup")
[ -n "$srv" ] || fail "nbd-attach ($sup) has no server child"
kill -KILL "$srv"
i=0
while kill -0 "$sup" 2>/dev/null; do
  i=$((i + 1)); [ $i -lt 100 ] || fail "nbd-attach still running 10 s after its server was killed"
  sleep 0.1
done
rc=0; wait "$sup" || rc=$?
[ "$rc" = 3 ] || fail "nbd-attach --foreground exited $rc after its server was killed, want 3"
wait_detached "$dev"
rm -f "$D/j.img"
ok "spawned nbd-serve killed: nbd-attach detaches $dev and exits 3"

# ------------------------------------------------ (k) endpoint server killed
step="k: endpoint server killed"
start_server k --listen "unix:$D/k.sock" "file:$D/k.img?size=16M"
K_PID=$PID
wait_ready k "$K_PID"
dev=$("$NBD_ATTACH" -v "unix:$D/k.sock" 2>>"$D/attach-k.log") || fail "nbd-attach unix:$D/k.sock failed"
kill -KILL "$K_PID"; wait "$K_PID" 2>/dev/null || true
sleep 0.5
rc=0; timeout 60 dd if="$D/pattern" of="$dev" bs=64k count=4 oflag=direct conv=notrunc 2>/dev/null || rc=$?
[ "$rc" != 0 ] || fail "an O_DIRECT write to $dev succeeded after its server was killed"
[ "$rc" != 124 ] && [ "$rc" != 143 ] || fail "an O_DIRECT write to $dev hung after its server was killed"
rc=0; timeout 60 dd if="$dev" of=/dev/null bs=64k count=4 iflag=direct 2>/dev/null || rc=$?
[ "$rc" != 0 ] || fail "an O_DIRECT read from $dev succeeded after its server was killed"
[ "$rc" != 124 ] && [ "$rc" != 143 ] || fail "an O_DIRECT read from $dev hung after its server was killed"
"$NBD_ATTACH" --detach "$dev" 2>"$D/detach.err" || fail "nbd-attach --detach $dev failed: $(cat "$D/detach.err")"
wait_detached "$dev"
rm -f "$D/k.img"
ok "endpoint nbd-serve killed: O_DIRECT write and read on $dev fail (no hang), --detach brings it to size 0"

# ------------------------------------------------ (l) --persist
step="l: --persist attach"
start_server p --listen "unix:$D/p.sock" "file:$D/p.img?size=16M"
P_PID=$PID
wait_ready p "$P_PID"
dev=$("$NBD_ATTACH" -v --persist --dead-timeout 30s --pidfile "$D/p.pid" "unix:$D/p.sock" 2>>"$D/attach-p.log") ||
  fail "nbd-attach --persist unix:$D/p.sock failed"
sup=$(cat "$D/p.pid")
[ "$sup" = "$(sup_pid "$dev")" ] || fail "--persist: pid file $sup, kernel shows $(sup_pid "$dev")"
dd if="$D/pattern" of="$dev" bs=1M count=1 oflag=direct conv=notrunc 2>/dev/null || fail "first write to $dev failed"

step="l: server killed, I/O during the outage"
kill -KILL "$P_PID"; wait "$P_PID" 2>/dev/null || true
sleep 0.5
( dd if="$D/pattern" of="$dev" bs=1M seek=1 oflag=direct conv=notrunc 2>"$D/p-dd.err" &&
  dd if="$dev" of="$D/p-back" bs=1M skip=1 count=4 iflag=direct 2>>"$D/p-dd.err" ) &
io=$!
sleep 2
kill -0 "$io" 2>/dev/null || { wait "$io" || true; fail "I/O during the outage ended before the server came back: $(cat "$D/p-dd.err")"; }
kill -0 "$sup" 2>/dev/null || fail "nbd-attach --persist exited during the outage"
[ -e "/sys/block/$(name_of "$dev")/pid" ] || fail "$dev was detached during the outage"
ok "--persist: server killed; $dev stays attached and holds I/O issued during the outage"

step="l: server restarted"
serving=$(grep -c '^nbd-serve: serving' "$D/p.log")
start_server p --listen "unix:$D/p.sock" "file:$D/p.img?size=16M"
P_PID=$PID
wait_ready p "$P_PID" "$serving"
i=0
while kill -0 "$io" 2>/dev/null; do
  i=$((i + 1)); [ $i -lt 300 ] || fail "I/O on $dev still held 30 s after the server restarted"
  sleep 0.1
done
rc=0; wait "$io" || rc=$?
[ "$rc" = 0 ] || fail "I/O issued during the outage failed (exit $rc): $(cat "$D/p-dd.err")"
cmp -s "$D/p-back" "$D/pattern" || fail "data read back after the reconnect differs"
dd if="$D/p.img" bs=1M skip=1 count=4 2>/dev/null | cmp -s - "$D/pattern" || fail "p.img lacks the data written during the outage"
grep -q "nbd-attach: warning: $dev: reconnected" "$D/attach-p.log" || fail "nbd-attach did not log the reconnect"
ok "--persist: server restarted; the write and read issued during the outage completed, data in the backing file"

step="l: --detach"
"$NBD_ATTACH" --detach "$dev" || fail "nbd-attach --detach $dev failed"
wait_detached "$dev"
wait_gone "$sup" "nbd-attach --persist after --detach"
[ ! -e "$D/p.pid" ] || fail "pid file $D/p.pid left behind"
[ "$(tail -n 1 "$D/attach-p.log")" = "nbd-attach: $dev detached" ] ||
  fail "after --detach the --persist supervisor's last words were '$(tail -n 1 "$D/attach-p.log")', want '$dev detached'"
stop_server p "$P_PID"
ok "--persist: --detach ends the supervisor, pid file removed"

# ------------------------------------------------ (m) --ioctl
step="m: --ioctl"
start_server m --listen "unix:$D/m.sock" "file:$D/m.img?size=32M"
M_PID=$PID
wait_ready m "$M_PID"
dev=$("$NBD_ATTACH" -v --ioctl --pidfile "$D/m.pid" "unix:$D/m.sock" 2>>"$D/attach-m.log") ||
  fail "nbd-attach --ioctl unix:$D/m.sock failed"
is_nbd "$dev" || fail "nbd-attach --ioctl printed '$dev'"
grep -q ', ioctl)' "$D/attach-m.log" || fail "nbd-attach --ioctl did not attach through ioctl: $(cat "$D/attach-m.log")"
sup=$(cat "$D/m.pid")
# the kernel records the thread that runs NBD_DO_IT: one of nbd-attach's threads
kpid=$(sup_pid "$dev")
[ -d "/proc/$sup/task/$kpid" ] || fail "--ioctl: the kernel's pid $kpid for $dev is not a thread of nbd-attach ($sup)"
roundtrip "$dev" "$D/m.img" "--ioctl"
set -- $(list_line "$dev")
[ "${2:-}" = connected ] && [ "${4:-}" = "$kpid" ] || fail "--list shows '$*' for $dev"
"$NBD_ATTACH" --detach "$dev" 2>"$D/detach.err" || fail "nbd-attach --detach $dev (ioctl) failed: $(cat "$D/detach.err")"
wait_detached "$dev"
wait_gone "$sup" "nbd-attach --ioctl after --detach"
[ ! -e "$D/m.pid" ] || fail "pid file $D/m.pid left behind"
# how the supervisor reported this --detach is checked at the end (detach_outcome)
stop_server m "$M_PID"
ok "--ioctl: $dev attached through ioctls (nbd-attach $sup stays), O_DIRECT round trip, --list, --detach ends it"

# ------------------------------------------------ (n) nbds:// (TLS relay)
step="n: nbds:// with a pre-shared key"
echo "alice:0123456789abcdef0123456789abcdef" >"$D/keys.psk"
truncate -s 32M "$D/n.img"
start_server n --tls require --tls-psk "$D/keys.psk" --listen "unix:$D/n.sock" "$D/n.img"
N_PID=$PID; SERVERS="$SERVERS $N_PID"
wait_ready n "$N_PID"
expect_error 1 "nbd-attach: unable to attach: server refused export '': this server requires TLS: use STARTTLS first" \
  "unix:$D/n.sock"
dev=$("$NBD_ATTACH" "nbds+unix://alice@/?socket=$D/n.sock&tls-psk-file=$D/keys.psk" 2>>"$D/attach-n.log") ||
  fail "nbd-attach nbds+unix:// failed: $(cat "$D/attach-n.log")"
is_nbd "$dev" || fail "nbd-attach nbds:// printed '$dev'"
sup=$(sup_pid "$dev")
roundtrip "$dev" "$D/n.img" "nbds://"
"$NBD_ATTACH" --detach "$dev" || fail "nbd-attach --detach $dev (TLS) failed"
wait_detached "$dev"
wait_gone "$sup" "the TLS relay of nbd-attach"
stop_server n "$N_PID"
rm -f "$D/n.img"
ok "nbds://: plain attach refused by a TLS-only server; PSK attach relays through nbd-attach ($sup), O_DIRECT round trip, --detach ends the relay"

# ------------------------------------------------ (o) in-process store
step="o: the in-process attach library call (attach-store)"
truncate -s 32M "$D/o2.img"
"$TESTS/attach-store" --swap --connections 2 "$D/o2.img" >"$D/o2.dev" 2>"$D/attach-store.log" &
AS_PID=$!
wait_file "$D/o2.dev" "attach-store"
dev=$(cat "$D/o2.dev")
is_nbd "$dev" || fail "attach-store printed '$dev'"
[ "$(sup_pid "$dev")" = "$AS_PID" ] || fail "the kernel's pid for $dev is $(sup_pid "$dev"), not attach-store's $AS_PID"
grep -q '^VmLck:[[:space:]]*[1-9]' "/proc/$AS_PID/status" || fail "attach-store --swap did not lock memory"
roundtrip "$dev" "$D/o2.img" "attach-store"
kill -TERM "$AS_PID"
rc=0; wait "$AS_PID" || rc=$?
[ "$rc" = 0 ] || fail "attach-store exited $rc after SIGTERM: $(cat "$D/attach-store.log")"
wait_detached "$dev"
rm -f "$D/o2.img"
ok "in-process StoreAttachment: server threads in the attaching process ($AS_PID, memory locked), 2 socketpairs, round trip, SIGTERM detaches and syncs"

# ------------------------------------------------ (p) the example
step="p: examples/direct-mount.sh"
NBD_ATTACH=$NBD_ATTACH NBD_SERVE=$NBD_SERVE bash "$here/../../examples/direct-mount.sh" >"$D/example.out" 2>&1 ||
  fail "examples/direct-mount.sh failed: $(tail -n 5 "$D/example.out")"
tail -n 1 "$D/example.out" | grep -q OK || fail "examples/direct-mount.sh did not end with OK: $(tail -n 3 "$D/example.out")"
ok "examples/direct-mount.sh runs to OK in the guest"

step="full: stop servers"
stop_server a "$A_PID"; stop_server d "$D_PID"; stop_server x "$X_PID"
SERVERS=""
[ -z "$(stray_processes)" ] || fail "processes left: $(stray_processes)"
[ "$(connected_count)" = 0 ] || fail "$(connected_count) NBD devices still attached"
ok "full batch: no nbd-attach or nbd-serve left, no device attached"
detach_outcome
echo ALL-OK
