#!/usr/bin/env bash
# remote-swap: offer 64 MiB of memory with ram-ul on a unix socket, borrow it
# as swap with ram-dl, push a memory hog out to it through a cgroup memory
# limit, then give it back: SIGTERM makes ram-dl swap off and detach.
# Prints OK at the end.
#
# ram-ul and ram-dl run on this one machine here; across machines, ram-ul
# runs on the one with memory to spare and ram-dl reaches it over TCP (see
# ram-dl(1)). ram-ul's memory is locked (MEMSYNC_SWAP_PATH=1): memory that
# backs swap must never be swapped itself.
#
# Needs root and the nbd kernel module (loaded here with modprobe if it is
# not); without them it prints why and exits 77, meaning skipped. The hog
# step needs cgroup v2 with the memory controller at /sys/fs/cgroup, and is
# left out, saying so, without it.
# Uses build/bin/ram-ul and build/bin/ram-dl of this repository when they
# are built, else the ones in PATH; RAM_UL and RAM_DL override.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

# find_tool NAME OVERRIDE: the tool's path, or a message and exit 1.
find_tool() {
  local name=$1 path=$2 var=${1^^}
  if [[ -n $path ]]; then
    [[ -x $path ]] || { echo "$name: $path is not an executable" >&2; exit 1; }
    echo "$path"
    return
  fi
  path=$here/../build/bin/$name
  [[ -x $path ]] || path=$(command -v "$name") ||
    { echo "$name not found: run 'make' first (or set ${var//-/_})" >&2; exit 1; }
  echo "$path"
}
ram_ul=$(find_tool ram-ul "${RAM_UL:-}")
ram_dl=$(find_tool ram-dl "${RAM_DL:-}")

# Skipped, not failed, where swap on an NBD device cannot be made.
skip() { echo "remote-swap: skipped: $*" >&2; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root to attach a block device and swap on it"
if [[ ! -d /sys/module/nbd ]]; then
  { command -v modprobe >/dev/null && modprobe nbd 2>/dev/null; } ||
    skip "the nbd kernel module is not loaded and 'modprobe nbd' failed"
fi

step() { printf '\n==> %s\n' "$*"; }
trap 'echo; echo "FAILED: the step above did not work" >&2' ERR

# Clean up whatever happens; registered before anything is started.
dir=$(mktemp -d "${TMPDIR:-/tmp}/remote-swap.XXXXXX")
cg=/sys/fs/cgroup/remote-swap.$$
server=
dl=
cleanup() {
  if [[ -n $dl ]]; then kill -TERM "$dl" 2>/dev/null || true; wait "$dl" 2>/dev/null || true; fi
  if [[ -n $server ]]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  [[ -d $cg ]] && rmdir "$cg" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

sock=$dir/ram.sock
step "Offering 64 MiB of locked memory on unix:$sock (ram-ul)"
MEMSYNC_SWAP_PATH=1 "$ram_ul" --listen "unix:$sock" --size 64M &
server=$!
for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.05; done
[[ -S $sock ]] || { echo "ram-ul did not start" >&2; exit 1; }

step "Borrowing it as swap with priority 5 (ram-dl, in the foreground of this script)"
# --foreground keeps ram-dl our child, so that we see its exit status; a
# script that does not care takes the device with dev=$(ram-dl ...).
"$ram_dl" -v --priority 5 --foreground "unix:$sock" >"$dir/dev" &
dl=$!
for _ in $(seq 300); do [[ -s $dir/dev ]] && break; kill -0 "$dl" 2>/dev/null || break; sleep 0.1; done
[[ -s $dir/dev ]] || { echo "ram-dl did not print a device" >&2; false; }
dev=$(<"$dir/dev")
echo "the device is $dev"
grep -E "^(Filename|$dev) " /proc/swaps
[[ $(awk -v d="$dev" '$1 == d {print $5}' /proc/swaps) == 5 ]] || { echo "$dev is not swap with priority 5" >&2; false; }

step "Squeezing a 48 MiB memory hog into 16 MiB: the rest goes to $dev"
if [[ -e /sys/fs/cgroup/cgroup.controllers ]] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
  echo +memory >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
  mkdir "$cg"
  # memory.high throttles and reclaims; memory.max would OOM-kill the hog
  # while its pages are still on their way out.
  echo 16M >"$cg/memory.high"
  name=${dev#/dev/}
  read -r _ _ _ _ w0 _ </sys/block/"$name"/stat
  # dd's 48 MiB buffer, filled twice with data that does not compress.
  sh -c 'echo $$ >"$1/cgroup.procs" && exec dd if=/dev/urandom of=/dev/null bs=48M count=2 2>/dev/null' hog "$cg"
  read -r _ _ _ _ w1 _ </sys/block/"$name"/stat
  echo "writes to $dev during the hog: $((w1 - w0)); swap now:"
  grep -E "^(Filename|$dev) " /proc/swaps
  ((w1 > w0)) || { echo "nothing was written to $dev" >&2; false; }
  rmdir "$cg"
else
  echo "no cgroup v2 memory controller at /sys/fs/cgroup: left out"
fi

step "Giving it back: SIGTERM to ram-dl swaps off $dev and detaches it"
kill -TERM "$dl"
wait "$dl"
dl=
if grep -q "^$dev " /proc/swaps; then echo "$dev is still swap" >&2; false; fi
[[ $(cat /sys/block/"${dev#/dev/}"/size) == 0 ]] || { echo "$dev is still attached" >&2; false; }
echo "$dev is no longer swap, and detached"

step "Stopping ram-ul (SIGTERM, clean exit)"
kill -TERM "$server"
wait "$server"
server=
echo OK
