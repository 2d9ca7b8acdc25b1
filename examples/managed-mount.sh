#!/usr/bin/env bash
# managed-mount: a managed mount without root. ram-ul offers a 64 MiB file on
# a unix socket (the "remote"); nbd-serve --cache serves it through a local
# cache file that is filled in the background. nbdcopy reads it out, then
# writes new data in: the writes stay in the cache until a flush pushes them
# to the remote, which the script shows by comparing ram-ul's file before and
# after. Prints OK at the end.
# Needs nbdcopy (libnbd-bin): `make deps`. RAM_UL and NBD_SERVE override the
# tools; otherwise build/bin, then PATH.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
find_tool() {  # find_tool NAME OVERRIDE
  if [[ -n $2 ]]; then echo "$2"
  elif [[ -x $here/../build/bin/$1 ]]; then echo "$here/../build/bin/$1"
  else command -v "$1" || { echo "$1 not found: run 'make' first" >&2; return 1; }
  fi
}
ram_ul=$(find_tool ram-ul "${RAM_UL-}")
nbd_serve=$(find_tool nbd-serve "${NBD_SERVE-}")
command -v nbdcopy >/dev/null || { echo "nbdcopy not found: run 'make deps' (libnbd-bin)" >&2; exit 1; }

step() { printf '\n==> %s\n' "$*"; }
trap 'echo; echo "FAILED: the step above did not work" >&2' ERR

# Clean up whatever happens; registered before anything is started.
dir=$(mktemp -d)
servers=()
cleanup() {
  local p
  for p in "${servers[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${servers[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

# wait_for_socket PATH: until a server has bound it (5 s at most).
wait_for_socket() {
  for _ in $(seq 100); do [[ -S $1 ]] && return 0; sleep 0.05; done
  echo "$1 did not appear" >&2
  return 1
}

step "The remote: ram-ul offers a 64 MiB file of random bytes on unix:$dir/remote.sock"
head -c 64M /dev/urandom >"$dir/remote.img"
cp "$dir/remote.img" "$dir/original"
"$ram_ul" --listen "unix:$dir/remote.sock" "file:$dir/remote.img" &
servers+=($!)
wait_for_socket "$dir/remote.sock"

step "The managed mount: nbd-serve --cache $dir/cache.img, pushing writes every hour"
# The cache file does not exist yet: it is created with the remote's size.
# A push interval of an hour leaves pushing to the flush below.
"$nbd_serve" --listen "unix:$dir/nbd.sock" --cache "$dir/cache.img" --push-interval 1h \
  "remote:unix:$dir/remote.sock?timeout=10s" &
servers+=($!)
wait_for_socket "$dir/nbd.sock"
uri="nbd+unix:///?socket=$dir/nbd.sock"
ls -l "$dir/cache.img"

step "Reading the whole export (nbdcopy): chunks not pulled yet are fetched at once"
nbdcopy "$uri" "$dir/out"
cmp "$dir/original" "$dir/out"
echo "the export holds the remote's bytes"

step "Writing 8 MiB of new data at the start, without a flush"
head -c 8M /dev/urandom >"$dir/new"
nbdcopy "$dir/new" "$uri"
nbdcopy "$uri" "$dir/out"
cmp -n 8388608 "$dir/new" "$dir/out"
cmp -n 8388608 "$dir/original" "$dir/remote.img"
echo "clients read the new data; the remote still has the old: it is in the cache only"

step "The same write with a flush (nbdcopy --flush): now the remote has it"
nbdcopy --flush "$dir/new" "$uri"
cmp -n 8388608 "$dir/new" "$dir/remote.img"
cmp -i 8388608 "$dir/original" "$dir/remote.img"
echo "ram-ul's file holds the new 8 MiB, and the rest is unchanged"

step "Stopping both servers (SIGTERM, clean exit)"
kill -TERM "${servers[1]}"
wait "${servers[1]}"
kill -TERM "${servers[0]}"
wait "${servers[0]}"
servers=()
echo OK
