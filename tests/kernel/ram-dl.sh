#!/bin/sh
# Kernel batch for ram-dl: runs INSIDE the run-in-vm guest (busybox sh,
# root), after smoke.sh and attach.sh, and drives build/bin/ram-dl against
# the real kernel (NBD driver, swap, cgroup v2 memory limits), with
# build/bin/ram-ul as the remote on the guest's loopback.
#
#   tests/kernel/ram-dl.sh quick    (make check: a short swap smoke)
#     - --no-swap (forked, --pidfile): the device is printed, is not swap;
#       ram-dl locks its memory and is OOM-proof; 4 MiB O_DIRECT round trip,
#       in ram-ul's file while still attached (write-through); SIGTERM to the
#       pid file's pid detaches, removes the pid file; ram-ul lives on
#     - errors: unreachable endpoint, busy --device (exit 1, one line,
#       nothing attached, no process left)
#     - TLS with a pre-shared key: plaintext and a wrong key refused (exit
#       1), the right key attaches, round trip; nbd-attach --detach of the
#       device ends that ram-dl
#     - swap (--foreground, -p 7, --no-compress): in /proc/swaps with
#       priority 7 and the size of the header ram-dl wrote; swap-pattern
#       24 MiB in a cgroup held to 12M (memory.high): pages out while it
#       pauses (/proc/swaps Used, memory.swap.current, the device's own
#       write and read counts), back in, pattern intact; SIGTERM: swapoff,
#       detach, exit 0, ram-ul alive, nothing in /proc/swaps
#   tests/kernel/ram-dl.sh full     (make check-long: quick, then)
#     - the default endpoint (tcp:127.0.0.1:1337), ram-ul serving a brd
#       ramdisk (/dev/ram1: run-in-vm --modules brd --append
#       "brd.rd_nr=2 brd.rd_size=98304"): writes through the device are on
#       the ramdisk at once
#     - swap-pattern 80 MiB held to 32M, LZ4 on (the default): most of the
#       96 MiB swap area in use
#     - ram-ul killed while 48 MiB are out, swap-ins issued during the outage
#       wait; ram-ul restarted on the same backend: ram-dl reconnects, the
#       pattern checks, a second round swaps out and in again; SIGTERM
#       still swaps off and detaches cleanly
#     - examples/remote-swap.sh (needs --bin bash --files examples)
# The remote's memory is kept out of swap: ram-ul runs with
# MEMSYNC_SWAP_PATH=1 (memory locked as touched) or serves a ramdisk
# (tests/vm/README.md). Only the pattern program is squeezed by a cgroup.
# Prints one "ok - ram-dl: ..." line per verdict and ALL-OK at the end; on a
# failure "FAIL - ..." plus the logs in /tmp/ram-dl, /proc/swaps, the
# processes and the kernel's nbd/swap messages (on stderr), exit non-zero.
set -eu

level=${1:-quick}
case $level in quick|full) ;; *) echo "usage: $0 quick|full" >&2; exit 2 ;; esac

here=$(cd "$(dirname "$0")" && pwd)
BIN=$(cd "$here/../../build/bin" && pwd)        # --files build/bin
TESTS=$(cd "$here/../../build/tests" && pwd)    # --files build/tests/swap-pattern
RAM_DL=$BIN/ram-dl
RAM_UL=$BIN/ram-ul
PATTERN=$TESTS/swap-pattern
D=/tmp/ram-dl
CG=/sys/fs/cgroup/ram-dl-hog
MiB=1048576
step="start"
PIDS=""   # ram-ul and ram-dl processes to kill on a failure

ok() { echo "ok - ram-dl: $*"; }
fail() { echo "FAIL - ram-dl: $*"; exit 1; }

on_exit() {
  rc=$?
  [ "$rc" -eq 0 ] && return 0
  echo "FAIL - ram-dl.sh $level: exit status $rc during: $step"
  {
    for f in "$D"/*.log "$D"/*.err; do
      [ -f "$f" ] || continue
      echo "----- $f"; tail -n 25 "$f"
    done
    echo "----- /proc/swaps"; cat /proc/swaps
    [ -d "$CG" ] && { echo "----- $CG memory.events"; cat "$CG/memory.events"; }
    echo "----- ram-dl / ram-ul / swap-pattern processes"
    for p in /proc/[0-9]*; do
      c=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null || true)
      case $c in *ram-dl*|*ram-ul*|*swap-pattern*) echo "${p#/proc/} $(cut -d' ' -f3 "$p/stat" 2>/dev/null) $c" ;; esac
    done
    echo "----- kernel messages about nbd and swap"
    dmesg | grep -iE 'nbd|swap|oom' | tail -n 25
  } >&2
  rm -f "$D/pause"
  for p in $PIDS; do kill "$p" 2>/dev/null || true; done
  return "$rc"
}
trap on_exit EXIT

# ------------------------------------------------------------ helpers
name_of() { echo "${1#/dev/}"; }
sectors() { cat "/sys/block/$(name_of "$1")/size"; }
is_nbd() { case $1 in /dev/nbd[0-9]*) [ -b "$1" ] ;; *) return 1 ;; esac; }
sup_pid() { cat "/sys/block/$(name_of "$1")/pid"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
alive() { [ -d "/proc/$1" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# swaps_field DEV N: field N of DEV's line in /proc/swaps (3 size KiB,
# 4 used KiB, 5 priority); empty when DEV is not active swap
swaps_field() { awk -v d="$1" -v n="$2" '$1 == d {print $n}' /proc/swaps; }

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
  while alive "$1"; do
    i=$((i + 1)); [ $i -lt $lim ] || fail "$2 (pid $1) still running after ${3:-5} s"
    sleep 0.1
  done
}

# wait_file FILE WHAT [SECONDS]: FILE exists and is not empty within SECONDS (10)
wait_file() {
  i=0; lim=$((${3:-10} * 10))
  while [ ! -s "$1" ]; do
    i=$((i + 1)); [ $i -lt $lim ] || fail "$2: nothing in $1 after ${3:-10} s"
    sleep 0.1
  done
}

# start_ul NAME ENDPOINT ARGS...: ram-ul -v on ENDPOINT, memory locked
# (MEMSYNC_SWAP_PATH=1), log in $D/NAME.log; sets UL_PID once it listens.
start_ul() {
  name=$1; ep=$2; shift 2
  : >>"$D/$name.log"
  before=$(grep -c 'offering' "$D/$name.log" || true)
  MEMSYNC_SWAP_PATH=1 "$RAM_UL" -v --listen "$ep" "$@" 2>>"$D/$name.log" &
  UL_PID=$!
  PIDS="$PIDS $UL_PID"
  i=0
  while [ "$(grep -c 'offering' "$D/$name.log" || true)" -le "$before" ]; do
    alive "$UL_PID" || fail "ram-ul ($name) exited at start: $(tail -n 3 "$D/$name.log")"
    i=$((i + 1)); [ $i -lt 100 ] || fail "ram-ul ($name) not listening after 10 s"
    sleep 0.1
  done
}

# stop_ul NAME PID: SIGTERM, exit 0 within 10 s
stop_ul() {
  kill -TERM "$2"
  i=0
  while alive "$2"; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "ram-ul ($1) still running 10 s after SIGTERM"
    sleep 0.1
  done
  rc=0; wait "$2" || rc=$?
  [ "$rc" = 0 ] || fail "ram-ul ($1) exited $rc after SIGTERM, want 0"
}

# swap_path_checks PID WHAT: memory locked, OOM-proof, I/O flusher
swap_path_checks() {
  lck=$(awk '/^VmLck:/ {print $2}' "/proc/$1/status")
  [ "${lck:-0}" -gt 0 ] || fail "$2 (pid $1) has no locked memory (VmLck ${lck:-?} kB)"
  [ "$(cat "/proc/$1/oom_score_adj")" = -1000 ] || fail "$2 has oom_score_adj $(cat "/proc/$1/oom_score_adj"), want -1000"
}

connected_count() {
  n=0
  for p in /sys/block/nbd*/pid; do [ -e "$p" ] && n=$((n + 1)); done
  echo $n
}

# stray: the pids of ram-dl processes still running (one pidof: a loop
# over /proc forks per process, seconds under emulation)
stray() { pidof ram-dl || true; }

# expect_error WANT_MESSAGE ARGS...: ram-dl ARGS exits 1 with exactly
# WANT_MESSAGE on stderr, prints nothing on stdout, and leaves no more
# devices attached nor ram-dl processes running than before.
expect_error() {
  want=$1; shift
  before=$(connected_count)
  procs=$(stray)
  rc=0
  "$RAM_DL" "$@" >"$D/err.out" 2>"$D/err.err" || rc=$?
  [ "$rc" = 1 ] || fail "ram-dl $* exited $rc, want 1 (stderr: $(cat "$D/err.err"))"
  [ "$(cat "$D/err.err")" = "$want" ] || fail "ram-dl $* said '$(cat "$D/err.err")', want '$want'"
  [ ! -s "$D/err.out" ] || fail "ram-dl $* printed '$(cat "$D/err.out")' on stdout"
  [ "$(connected_count)" = "$before" ] || fail "ram-dl $* left a device attached"
  sleep 0.2
  [ "$(stray)" = "$procs" ] || fail "ram-dl $* left a process running: $(stray)"
}

# hog_start MIB LIMIT ARGS...: swap-pattern in the cgroup $CG held to
# LIMIT of memory, with unlimited swap; pauses after the fill ($D/pause);
# sets HOG_PID. Output in $D/pattern.out, progress in .err.
# The limit is memory.high, not memory.max: above it the kernel reclaims
# and throttles the task, where memory.max OOM-kills it as soon as reclaim
# finds only pages still being written to swap, which under emulation (and
# on any slow remote) is most of them.
hog_start() {
  mib=$1; limit=$2; shift 2
  echo +memory >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
  [ -d "$CG" ] || mkdir "$CG"
  echo "$limit" >"$CG/memory.high" || fail "cannot set memory.high of $CG"
  echo max >"$CG/memory.max"
  if [ -e "$CG/memory.swap.max" ]; then echo max >"$CG/memory.swap.max"; fi
  rm -f "$D/pause"
  sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' hog "$CG" \
    "$PATTERN" --pause "$D/pause" "$@" "$mib" >"$D/pattern.out" 2>"$D/pattern.err" &
  HOG_PID=$!
  PIDS="$PIDS $HOG_PID"
}

# hog_paused SECONDS WHAT: swap-pattern has filled its memory and waits
hog_paused() {
  i=0
  while [ ! -s "$D/pause" ]; do
    alive "$HOG_PID" || { wait "$HOG_PID" || true; fail "$2: swap-pattern ended before its pause: $(cat "$D/pattern.out" "$D/pattern.err") (memory.events: $(tr '\n' ' ' <"$CG/memory.events"))"; }
    i=$((i + 1)); [ $i -lt $(($1 * 10)) ] || fail "$2: swap-pattern has not filled its memory after $1 s"
    sleep 0.1
  done
}

# hog_wait SECONDS WHAT: swap-pattern exits 0 with its ok verdict
hog_wait() {
  i=0
  while alive "$HOG_PID"; do
    i=$((i + 1)); [ $i -lt $(($1 * 10)) ] || fail "$2: swap-pattern still running after $1 s ($(tail -n 1 "$D/pattern.err"))"
    sleep 0.1
  done
  rc=0; wait "$HOG_PID" || rc=$?
  [ "$rc" = 0 ] || fail "$2: swap-pattern exited $rc: $(cat "$D/pattern.out") (memory.events: $(tr '\n' ' ' <"$CG/memory.events"))"
  grep -q '^swap-pattern: ok - ' "$D/pattern.out" || fail "$2: swap-pattern said '$(cat "$D/pattern.out")'"
}

# swap_stop PID DEV LOG WHAT [COMPLAINTS]: SIGTERM to a --foreground
# ram-dl: swapoff, detach, exit 0, and no line in its log matching the
# extended regex COMPLAINTS (default: no error, warning or fatal at all)
swap_stop() {
  kill -TERM "$1"
  i=0
  while alive "$1"; do
    i=$((i + 1)); [ $i -lt 600 ] || fail "$4: ram-dl still running 60 s after SIGTERM"
    sleep 0.1
  done
  rc=0; wait "$1" || rc=$?
  [ "$rc" = 0 ] || fail "$4: ram-dl exited $rc after SIGTERM, want 0: $(tail -n 3 "$3")"
  [ -z "$(swaps_field "$2" 1)" ] || fail "$4: $2 still in /proc/swaps after ram-dl exited"
  wait_detached "$2"
  grep -q "^ram-dl: $2 detached" "$3" || fail "$4: ram-dl did not log '$2 detached'"
  if grep -E "${5:-^ram-dl: (unable|warning|fatal)}" "$3"; then fail "$4: ram-dl complained"; fi
}

[ -x "$RAM_DL" ] || fail "no ram-dl at $RAM_DL (make build/bin/ram-dl)"
[ -x "$RAM_UL" ] || fail "no ram-ul at $RAM_UL (make all)"
[ -x "$PATTERN" ] || fail "no swap-pattern at $PATTERN (make build/tests/swap-pattern; run-in-vm --files build/tests/swap-pattern)"
[ -b /dev/nbd0 ] || fail "no /dev/nbd0: nbd module not loaded (run-in-vm --modules nbd)"
[ -z "$(grep '^/dev/nbd' /proc/swaps)" ] || fail "an NBD device is already swap before ram-dl.sh: $(cat /proc/swaps)"

rm -rf "$D"; mkdir -p "$D"
dd if=/dev/urandom of="$D/pattern" bs=1M count=4 2>/dev/null
t_batch=$(date +%s)

# ================================================================ quick
# ------------------------------------------------ (a) --no-swap
step="a: ram-ul with a 32 MiB file"
start_ul a "unix:$D/a.sock" "file:$D/a.img?size=32M"
A_PID=$UL_PID

step="a: ram-dl --no-swap"
dev=$("$RAM_DL" -v --no-swap --pidfile "$D/a.pid" "unix:$D/a.sock" 2>>"$D/dl-a.log") ||
  fail "ram-dl --no-swap unix:$D/a.sock failed: $(tail -n 3 "$D/dl-a.log")"
is_nbd "$dev" || fail "ram-dl --no-swap printed '$dev', not an NBD device"
[ "$(sectors "$dev")" = 65536 ] || fail "$dev has $(sectors "$dev") sectors, want 65536 (32 MiB)"
[ -s "$D/a.pid" ] || fail "no pid file $D/a.pid once the device was printed"
dl=$(cat "$D/a.pid")
alive "$dl" || fail "the pid file says $dl, which is not running"
[ "$(sup_pid "$dev")" = "$dl" ] || fail "the kernel shows pid $(sup_pid "$dev") for $dev, the pid file $dl"
[ -z "$(swaps_field "$dev" 1)" ] || fail "--no-swap: $dev is in /proc/swaps"
swap_path_checks "$dl" "ram-dl --no-swap"
[ "$(cat "/sys/block/$(name_of "$dev")/backend")" = "memsync:ram-dl unix:$D/a.sock" ] ||
  fail "backend of $dev is '$(cat "/sys/block/$(name_of "$dev")/backend")'"
kb=$(cat "/sys/block/$(name_of "$dev")/queue/max_sectors_kb")
[ "$kb" = 1024 ] || fail "max_sectors_kb of $dev is $kb, want 1024 (ram-dl's 1 MiB request cap)"
ok "--no-swap: printed $dev (32 MiB), not swap; ram-dl ($dl, from the pid file) serves it in-process, memory locked, oom_score_adj -1000, requests of at most 1 MiB"

step="a: round trip"
dd if="$D/pattern" of="$dev" bs=1M seek=1 oflag=direct conv=notrunc 2>"$D/dd.err" ||
  fail "O_DIRECT write to $dev failed: $(cat "$D/dd.err")"
# Write-through: the file behind ram-ul holds it before any flush or detach.
dd if="$D/a.img" bs=1M skip=1 count=4 2>/dev/null | cmp -s - "$D/pattern" ||
  fail "after an O_DIRECT write to $dev, ram-ul's file lacks the data (not write-through)"
drop_caches
dd if="$dev" of="$D/back" bs=1M skip=1 count=4 iflag=direct 2>"$D/dd.err" ||
  fail "O_DIRECT read from $dev failed: $(cat "$D/dd.err")"
cmp -s "$D/pattern" "$D/back" || fail "data read back from $dev differs from the pattern"
ok "$dev: 4 MiB O_DIRECT write is in ram-ul's file at once (write-through); read back identical"

# ------------------------------------------------ (b) errors
step="b: errors"
expect_error "ram-dl: unable to borrow memory: connect to unix:$D/nope.sock: No such file or directory" \
  --no-swap "unix:$D/nope.sock"
ok "unreachable endpoint: exit 1, one line naming it, nothing attached, no process left"
expect_error "ram-dl: unable to attach unix:$D/a.sock: $dev is already in use" --no-swap --device "$dev" "unix:$D/a.sock"
[ "$(sectors "$dev")" = 65536 ] && [ "$(sup_pid "$dev")" = "$dl" ] || fail "the busy $dev changed"
ok "--device of a busy device: exit 1, '$dev is already in use', the device keeps its server"

# ------------------------------------------------ (t) TLS with a pre-shared key
step="t: TLS"
echo "alice:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff" >"$D/keys.psk"
echo "alice:ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100" >"$D/wrong.psk"
start_ul t "unix:$D/t.sock" --tls-psk "$D/keys.psk" --size 8M
T_PID=$UL_PID
rc=0; "$RAM_DL" --no-swap "unix:$D/t.sock" >"$D/err.out" 2>"$D/err.err" || rc=$?
[ "$rc" = 1 ] && [ ! -s "$D/err.out" ] || fail "plaintext to a TLS-only ram-ul: exit $rc, stdout '$(cat "$D/err.out")'"
case $(cat "$D/err.err") in "ram-dl: unable to borrow memory: unix:$D/t.sock: "*) ;;
  *) fail "plaintext to a TLS-only ram-ul said '$(cat "$D/err.err")'" ;; esac
plain_err=$(cat "$D/err.err")
rc=0; "$RAM_DL" --no-swap --tls-psk "$D/wrong.psk" "unix:$D/t.sock" >"$D/err.out" 2>"$D/err.err" || rc=$?
[ "$rc" = 1 ] || fail "a wrong pre-shared key: exit $rc, want 1"
case $(cat "$D/err.err") in "ram-dl: unable to borrow memory: unix:$D/t.sock (TLS): "*) ;;
  *) fail "a wrong pre-shared key said '$(cat "$D/err.err")'" ;; esac
tdev=$("$RAM_DL" -v --no-swap --tls-psk "$D/keys.psk" --tls-identity alice --pidfile "$D/t.pid" "unix:$D/t.sock" 2>>"$D/dl-t.log") ||
  fail "ram-dl --tls-psk failed: $(tail -n 3 "$D/dl-t.log")"
dd if="$D/pattern" of="$tdev" bs=1M count=4 oflag=direct 2>/dev/null || fail "O_DIRECT write to $tdev (TLS) failed"
drop_caches
dd if="$tdev" of="$D/back" bs=1M count=4 iflag=direct 2>/dev/null || fail "O_DIRECT read from $tdev (TLS) failed"
cmp -s "$D/pattern" "$D/back" || fail "$tdev (TLS): data read back differs"
tdl=$(cat "$D/t.pid")
# Detached by someone else: a --no-swap ram-dl notices and ends.
"$BIN/nbd-attach" --detach "$tdev" || fail "nbd-attach --detach $tdev failed"
wait_gone "$tdl" "ram-dl --tls-psk after nbd-attach --detach"
wait_detached "$tdev"
grep -q "^ram-dl: $tdev detached by someone else" "$D/dl-t.log" || fail "ram-dl did not log '$tdev detached by someone else'"
stop_ul t "$T_PID"
ok "TLS: plaintext to a TLS-only ram-ul refused ('${plain_err#ram-dl: }'), a wrong key refused, the right one attaches $tdev: 4 MiB round trip; nbd-attach --detach ends that ram-dl"

step="a: SIGTERM"
kill -TERM "$dl"
wait_gone "$dl" "ram-dl --no-swap after SIGTERM"
wait_detached "$dev"
[ ! -e "$D/a.pid" ] || fail "the pid file $D/a.pid is still there after ram-dl exited"
alive "$A_PID" || fail "ram-ul died when ram-dl detached"
grep -q "^ram-dl: $dev detached" "$D/dl-a.log" || fail "ram-dl did not log '$dev detached'"
if grep -E '^ram-dl: (unable|warning|fatal)' "$D/dl-a.log"; then fail "ram-dl --no-swap complained on SIGTERM"; fi
stop_ul a "$A_PID"
rm -f "$D/a.img"
ok "SIGTERM to ram-dl --no-swap: $dev detached, pid file removed, ram-ul unharmed (stops cleanly later)"

# ------------------------------------------------ (c) swap
step="c: ram-ul with 64 MiB of locked memory"
t_swap=$(date +%s)
start_ul s "unix:$D/s.sock" --size 64M
S_PID=$UL_PID

step="c: ram-dl -p 7 --foreground --no-compress"
"$RAM_DL" -v -p 7 --foreground --no-compress "unix:$D/s.sock" >"$D/s.dev" 2>>"$D/dl-s.log" &
dl=$!
PIDS="$PIDS $dl"
wait_file "$D/s.dev" "ram-dl --foreground"
dev=$(cat "$D/s.dev")
is_nbd "$dev" || fail "ram-dl printed '$dev', not an NBD device"
[ "$(sup_pid "$dev")" = "$dl" ] || fail "--foreground: the kernel shows pid $(sup_pid "$dev") for $dev, the job is $dl"
[ "$(swaps_field "$dev" 5)" = 7 ] || fail "$dev is not swap with priority 7: $(grep "^$dev " /proc/swaps || echo 'not in /proc/swaps')"
# 64 MiB is 16384 pages; the header page is not swap: 16383 pages, 65532 KiB
[ "$(swaps_field "$dev" 3)" = 65532 ] || fail "$dev is swap of $(swaps_field "$dev" 3) KiB, want 65532 (a header for 64 MiB)"
swap_path_checks "$dl" "ram-dl"
ok "swap: printed $dev once it was active swap: priority 7, 65532 KiB (the v1 header ram-dl wrote), ram-dl ($dl) locked and OOM-proof"

step="c: swap-pattern 24 MiB in a cgroup held to 12M"
in0=$(awk '/^pswpin / {print $2}' /proc/vmstat)
set -- $(cat "/sys/block/$(name_of "$dev")/stat"); r0=$1; w0=$5
hog_start 24 12M
hog_paused 120 "24 MiB in 12M"
used=$(swaps_field "$dev" 4)
[ "${used:-0}" -gt 0 ] || fail "swap-pattern filled 24 MiB in a 12M cgroup but $dev has Used ${used:-?} KiB"
cg_swap=$(cat "$CG/memory.swap.current" 2>/dev/null || echo "")
rm -f "$D/pause"
hog_wait 120 "24 MiB in 12M"
in1=$(awk '/^pswpin / {print $2}' /proc/vmstat)
[ "$in1" -gt "$in0" ] || fail "nothing was swapped back in (pswpin $in0 -> $in1)"
# The device itself saw the traffic (not only swap slots, which zswap
# would also take): writes out, reads back in.
set -- $(cat "/sys/block/$(name_of "$dev")/stat"); r1=$1; w1=$5
[ "$w1" -gt "$w0" ] && [ "$r1" -gt "$r0" ] || fail "$dev saw $((w1 - w0)) writes and $((r1 - r0)) reads during the swap round"
oom=$(awk '$1 == "oom_kill" {print $2}' "$CG/memory.events")
[ "${oom:-0}" = 0 ] || fail "the cgroup saw $oom OOM kills"
high=$(awk '$1 == "high" {print $2}' "$CG/memory.events")
ok "swap-pattern 24 MiB held to 12M (memory.high, $high throttling events): $used KiB on $dev while paused${cg_swap:+ (memory.swap.current $cg_swap)}, $((w1 - w0)) writes and $((r1 - r0)) reads on $dev, $((in1 - in0)) pages swapped back in, every page intact"

step="c: SIGTERM"
swap_stop "$dl" "$dev" "$D/dl-s.log" "swap"
alive "$S_PID" || fail "ram-ul died when ram-dl swapped off and detached"
stop_ul s "$S_PID"
[ -z "$(grep '^/dev/nbd' /proc/swaps)" ] || fail "NBD swap left in /proc/swaps: $(cat /proc/swaps)"
ok "SIGTERM: ram-dl swapped off $dev, detached it and exited 0; ram-ul unharmed; /proc/swaps has no NBD device ($(($(date +%s) - t_swap)) s)"

if [ "$level" = quick ]; then
  [ -z "$(stray)" ] || fail "processes left: $(stray)"
  [ "$(connected_count)" = 0 ] || fail "$(connected_count) NBD devices still attached"
  rmdir "$CG" 2>/dev/null || true
  ok "quick batch: no ram-dl left, no device attached ($(($(date +%s) - t_batch)) s)"
  echo ALL-OK
  exit 0
fi

# ================================================================ full
# ------------------------------------------------ (d) the default endpoint, a ramdisk
step="d: ram-ul on the default endpoint, serving /dev/ram1"
[ -b /dev/ram1 ] || fail "no /dev/ram1 (run-in-vm --modules brd --append 'brd.rd_nr=2 brd.rd_size=98304')"
start_ul f tcp:127.0.0.1:1337 /dev/ram1
F_PID=$UL_PID

step="d: ram-dl --no-swap, default endpoint"
dev=$("$RAM_DL" -v --no-swap --pidfile "$D/d.pid" 2>>"$D/dl-d.log") || fail "ram-dl --no-swap (default endpoint) failed"
is_nbd "$dev" || fail "ram-dl printed '$dev'"
[ "$(sectors "$dev")" = "$(cat /sys/block/ram1/size)" ] || fail "$dev has $(sectors "$dev") sectors, /dev/ram1 $(cat /sys/block/ram1/size)"
dd if="$D/pattern" of="$dev" bs=1M seek=8 oflag=direct conv=notrunc 2>/dev/null || fail "O_DIRECT write to $dev failed"
dd if=/dev/ram1 bs=1M skip=8 count=4 iflag=direct 2>/dev/null | cmp -s - "$D/pattern" ||
  fail "after an O_DIRECT write to $dev, /dev/ram1 lacks the data"
dl=$(cat "$D/d.pid")
kill -TERM "$dl"
wait_gone "$dl" "ram-dl --no-swap (default endpoint)"
wait_detached "$dev"
ok "default endpoint tcp:127.0.0.1:1337: $dev as big as ram-ul's /dev/ram1; an O_DIRECT write is on the ramdisk at once; SIGTERM detaches"

# ------------------------------------------------ (e) a bigger swap round
step="e: ram-dl swap on the ramdisk"
"$RAM_DL" -v --foreground --pidfile "$D/e.pid" >"$D/e.dev" 2>>"$D/dl-e.log" &
dl=$!
PIDS="$PIDS $dl"
wait_file "$D/e.dev" "ram-dl --foreground (default endpoint)"
dev=$(cat "$D/e.dev")
[ -n "$(swaps_field "$dev" 1)" ] || fail "$dev is not in /proc/swaps"
prio=$(swaps_field "$dev" 5)
[ "$prio" -lt 0 ] || fail "without --priority $dev has priority $prio, want one the kernel chose (negative)"

step="e: swap-pattern 80 MiB in 32M"
t0=$(date +%s)
hog_start 80 32M
hog_paused 240 "80 MiB in 32M"
used=$(swaps_field "$dev" 4)
[ "${used:-0}" -gt $((40 * 1024)) ] || fail "80 MiB in a 32M cgroup, but only ${used:-?} KiB on $dev"
rm -f "$D/pause"
hog_wait 240 "80 MiB in 32M"
ok "swap-pattern 80 MiB held to 32M, LZ4 on: $used KiB on $dev after the fill, every page intact ($(($(date +%s) - t0)) s)"

# ------------------------------------------------ (f) ram-ul killed and restarted
step="f: ram-ul killed while pages are out"
hog_start 48 16M --seed 77 --rounds 2
hog_paused 240 "48 MiB in 16M"
used=$(swaps_field "$dev" 4)
[ "${used:-0}" -gt $((20 * 1024)) ] || fail "48 MiB in 16M, but only ${used:-?} KiB on $dev"
kill -KILL "$F_PID"; wait "$F_PID" 2>/dev/null || true
rm -f "$D/pause"   # the check starts: its swap-ins wait for the remote
sleep 3
alive "$HOG_PID" || fail "swap-pattern ended during the outage: $(cat "$D/pattern.out")"
alive "$dl" || fail "ram-dl exited during the outage: $(tail -n 3 "$D/dl-e.log")"
[ -n "$(swaps_field "$dev" 1)" ] || fail "$dev left /proc/swaps during the outage"
[ -e "/sys/block/$(name_of "$dev")/pid" ] || fail "$dev was detached during the outage"
st=$(cut -d' ' -f3 "/proc/$HOG_PID/stat")
ok "ram-ul killed with $used KiB on $dev: 3 s later swap-pattern waits (state $st), ram-dl and the swap stay"

step="f: ram-ul restarted"
start_ul f tcp:127.0.0.1:1337 /dev/ram1
F_PID=$UL_PID
hog_wait 240 "after the restart"
grep -q "^ram-dl: warning: tcp:127.0.0.1:1337: connection lost: .*; reconnecting" "$D/dl-e.log" ||
  fail "ram-dl did not log the lost connection: $(grep 'tcp:127' "$D/dl-e.log")"
grep -q "^ram-dl: tcp:127.0.0.1:1337: reconnected" "$D/dl-e.log" || fail "ram-dl did not log the reconnect"
ok "ram-ul restarted on /dev/ram1: ram-dl reconnected, the swap-ins held during the outage completed; a second round out and in; every page intact"

step="f: SIGTERM"
# The outage left warnings (connection lost, reconnected); nothing worse.
swap_stop "$dl" "$dev" "$D/dl-e.log" "after the restart" '^ram-dl: (unable|fatal)'
[ ! -e "$D/e.pid" ] || fail "the pid file $D/e.pid is still there after ram-dl exited"
alive "$F_PID" || fail "the restarted ram-ul died when ram-dl swapped off"
stop_ul f "$F_PID"
ok "after the outage SIGTERM still swaps off $dev, detaches and exits 0; pid file removed; ram-ul unharmed"

# ------------------------------------------------ (g) the example
step="g: examples/remote-swap.sh"
rmdir "$CG" 2>/dev/null || true
RAM_UL=$RAM_UL RAM_DL=$RAM_DL bash "$here/../../examples/remote-swap.sh" >"$D/example.out" 2>&1 ||
  fail "examples/remote-swap.sh failed: $(tail -n 5 "$D/example.out")"
[ "$(tail -n 1 "$D/example.out")" = OK ] || fail "examples/remote-swap.sh did not end with OK: $(tail -n 3 "$D/example.out")"
grep -q "^writes to /dev/nbd[0-9]* during the hog: [1-9]" "$D/example.out" ||
  fail "examples/remote-swap.sh left out or failed its hog step: $(grep -A3 Squeezing "$D/example.out")"
ok "examples/remote-swap.sh runs to OK in the guest, hog step included"

[ -z "$(stray)" ] || fail "processes left: $(stray)"
[ "$(connected_count)" = 0 ] || fail "$(connected_count) NBD devices still attached"
[ -z "$(grep '^/dev/nbd' /proc/swaps)" ] || fail "NBD swap left in /proc/swaps: $(cat /proc/swaps)"
ok "full batch: no ram-dl left, no device attached, no NBD swap ($(($(date +%s) - t_batch)) s)"
echo ALL-OK
