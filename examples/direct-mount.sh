#!/usr/bin/env bash
# direct-mount: attach a 64 MiB image file as /dev/nbdN with nbd-attach, which
# starts nbd-serve for it ("direct mount"), make an ext4 file system on the
# device, mount it, write a file, unmount, detach, then check the image file
# itself with e2fsck: the file system went through the kernel and NBD into it.
#
# Needs root and the nbd kernel module (loaded here with modprobe if it is
# not); without them it prints why and exits 77, meaning skipped. Needs
# mkfs.ext4, e2fsck and debugfs (Debian package e2fsprogs).
# Uses build/bin/nbd-attach and build/bin/nbd-serve of this repository when
# they are built, else the ones in PATH; NBD_ATTACH and NBD_SERVE override.
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
attach=$(find_tool nbd-attach "${NBD_ATTACH:-}")
serve=$(find_tool nbd-serve "${NBD_SERVE:-}")
for tool in mkfs.ext4 e2fsck debugfs; do
  command -v "$tool" >/dev/null ||
    { echo "$tool not found: install e2fsprogs" >&2; exit 1; }
done

# Skipped, not failed, where a kernel block device cannot be made.
skip() { echo "direct-mount: skipped: $*" >&2; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root to attach a block device"
if [[ ! -d /sys/module/nbd ]]; then
  { command -v modprobe >/dev/null && modprobe nbd 2>/dev/null; } ||
    skip "the nbd kernel module is not loaded and 'modprobe nbd' failed"
fi

step() { printf '\n==> %s\n' "$*"; }
trap 'echo; echo "FAILED: the step above did not work" >&2' ERR

# Clean up whatever happens; registered before anything is started.
dir=$(mktemp -d "${TMPDIR:-/tmp}/direct-mount.XXXXXX")
img=$dir/disk.img
mnt=$dir/mnt
pidfile=$dir/nbd-attach.pid
dev=
mounted=
# wait_gone FILE: nbd-attach removes its pid file when it has exited (and
# has stopped nbd-serve).
wait_gone() {
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -e $1 ]] || return 0
    sleep 0.1
  done
  return 1
}
cleanup() {
  if [[ -n $mounted ]]; then umount "$mnt" 2>/dev/null || true; fi
  if [[ -n $dev ]]; then
    "$attach" --detach "$dev" 2>/dev/null || true
    wait_gone "$pidfile" || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

step "Creating a 64 MiB sparse image $img"
truncate -s 64M "$img"

step "Attaching it: nbd-attach -- nbd-serve $img"
dev=$("$attach" --pidfile "$pidfile" -- "$serve" "$img")
echo "the device is $dev; nbd-attach (pid $(cat "$pidfile")) supervises nbd-serve"
"$attach" --list | grep -E "^(DEVICE|$dev) "

step "Making an ext4 file system on $dev and mounting it"
mkfs.ext4 -q "$dev"
mkdir "$mnt"
mount "$dev" "$mnt"
mounted=1
echo "hello from $dev" >"$mnt/hello.txt"
sync
cat "$mnt/hello.txt"

step "Unmounting and detaching $dev (nbd-serve exits with it)"
umount "$mnt"
mounted=
"$attach" --detach "$dev"
dev=
wait_gone "$pidfile" || { echo "nbd-attach did not exit after --detach" >&2; false; }

step "Checking the image file itself: e2fsck -fn, and the file written"
e2fsck -fn "$img"
[[ $(debugfs -R 'cat /hello.txt' "$img" 2>/dev/null) == "hello from "* ]] ||
  { echo "hello.txt is not in the image" >&2; false; }

echo OK
