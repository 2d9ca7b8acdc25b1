#!/usr/bin/env bash
# serve-and-inspect: serve 64 MiB of memory as an NBD export, look at it with
# nbdinfo, write a pattern with qemu-io and read it back verified.
# Run by `make demo`. Needs nbdinfo (libnbd-bin) and qemu-io (qemu-utils): `make deps`.
set -euo pipefail

backend=mem:64M
here=$(cd "$(dirname "$0")" && pwd)
serve=$here/../build/bin/nbd-serve
[[ -x $serve ]] || serve=$(command -v nbd-serve) ||
  { echo "nbd-serve not found: run 'make' first" >&2; exit 1; }

step() { printf '\n==> %s\n' "$*"; }
trap 'echo; echo "FAILED: the step above did not work" >&2' ERR

# Clean up whatever happens; registered before anything is started.
dir=$(mktemp -d)
server=
cleanup() {
  if [[ -n $server ]]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

step "Serving $backend on unix:$dir/nbd.sock"
"$serve" --listen "unix:$dir/nbd.sock" "$backend" &
server=$!
for _ in $(seq 100); do [[ -S $dir/nbd.sock ]] && break; sleep 0.05; done
[[ -S $dir/nbd.sock ]] || { echo "the server did not start" >&2; exit 1; }
uri="nbd+unix:///?socket=$dir/nbd.sock"
echo "clients connect to $uri"

step "What a client sees (nbdinfo)"
nbdinfo "$uri"

step "Writing 1 MiB of 0xab at offset 4 MiB (qemu-io)"
qemu-io -f raw -c 'write -P 0xab 4M 1M' "$uri"

step "Reading it back, verified byte for byte (qemu-io read -P)"
qemu-io -f raw -c 'read -P 0xab 4M 1M' "$uri"

step "The bytes around it are still zero"
qemu-io -f raw -c 'read -P 0 0 4M' -c 'read -P 0 5M 59M' "$uri"

step "Done: every step passed; stopping the server (SIGTERM, clean exit)"
kill -TERM "$server"
wait "$server"
server=
