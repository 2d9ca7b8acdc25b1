#!/usr/bin/env bash
# remote-memory: offer 256 MiB of memory with ram-ul on a unix socket, export
# it as NBD with `nbd-serve remote:unix:...`, write a pattern into it with
# nbdcopy and read it back, compared byte for byte. Prints OK at the end.
# Needs nbdinfo and nbdcopy (libnbd-bin): `make deps`. RAM_UL and NBD_SERVE
# override the tools; otherwise build/bin, then PATH.
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

sock=$dir/ram.sock
step "Offering 256 MiB of memory on unix:$sock (ram-ul)"
"$ram_ul" --listen "unix:$sock" --size 256M -v &
server=$!
for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.05; done
[[ -S $sock ]] || { echo "ram-ul did not start" >&2; exit 1; }

# A 4 MiB pattern: the bytes 00..ff, doubled 14 times.
for i in $(seq 0 255); do printf '%b' "\\0$(printf %03o "$i")"; done >"$dir/pattern"
for _ in $(seq 14); do cat "$dir/pattern" "$dir/pattern" >"$dir/twice"; mv "$dir/twice" "$dir/pattern"; done

step "Through nbd-serve remote:unix:$sock: size, then the pattern in and out"
# --run gets the export's NBD URI in $uri; the paths come in the environment.
export dir
# shellcheck disable=SC2016  # expanded by the shell that --run starts
"$nbd_serve" "remote:unix:$sock" --run '
  nbdinfo --size "$uri" &&
  nbdcopy "$dir/pattern" "$uri" &&
  nbdcopy "$uri" "$dir/back"' | tee "$dir/size"
[[ $(head -n 1 "$dir/size") == 268435456 ]] || { echo "unexpected size" >&2; exit 1; }

step "Comparing: the first 4 MiB hold the pattern, the rest is still zero"
cmp -n 4194304 "$dir/pattern" "$dir/back"
cmp -i 4194304 -n 264241152 /dev/zero "$dir/back"

step "Stopping ram-ul (SIGTERM, clean exit)"
kill -TERM "$server"
wait "$server"
server=
echo OK
