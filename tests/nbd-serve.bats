#!/usr/bin/env bats
# nbd-serve: one @test per promise of man/nbd-serve.1. Third-party clients
# (nbdinfo, nbdcopy, qemu-io) are the judges; tests/interop.bats has the
# heavier interoperability runs, this file the CLI and the bad-input cases.

load helpers/common

setup() { common_setup; }
teardown() { common_teardown; }

@test "--help prints the usage and exits 0" {
  run "$NBD_SERVE" --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"Usage: nbd-serve [OPTIONS] BACKEND"* ]]
  [[ "$output" == *"--listen"* ]]
}

@test "--version prints the version and exits 0" {
  run "$NBD_SERVE" --version
  [ "$status" -eq 0 ]
  [[ "$output" =~ ^nbd-serve\ [0-9]+\.[0-9]+\.[0-9]+ ]]
}

@test "usage errors exit 2 with a pointer to --help" {
  run "$NBD_SERVE"
  [ "$status" -eq 2 ]
  [[ "$output" == *"missing BACKEND"* ]]
  [[ "$output" == *"--help"* ]]
  run "$NBD_SERVE" --bogus mem:1M
  [ "$status" -eq 2 ]
  run "$NBD_SERVE" --tls maybe mem:1M
  [ "$status" -eq 2 ]
  [[ "$output" == *"expected off, on or require"* ]]
  run "$NBD_SERVE" --listen tcp:nohost mem:1M
  [ "$status" -eq 2 ]
  [[ "$output" == *"endpoint 'tcp:nohost'"* ]]
  run "$NBD_SERVE" --threads 0 mem:1M
  [ "$status" -eq 2 ]
  run "$NBD_SERVE" --max-payload 3K --preferred-block-size 4K mem:1M
  [ "$status" -eq 2 ]
  run "$NBD_SERVE" --tls-cert x.pem mem:1M
  [ "$status" -eq 2 ]
  [[ "$output" == *"--tls is off"* ]]
  run "$NBD_SERVE" --tls on mem:1M
  [ "$status" -eq 2 ]
  [[ "$output" == *"needs --tls-cert and --tls-key, or --tls-psk"* ]]
}

@test "a malformed backend spec is a usage error (exit 2) and nothing is created" {
  run "$NBD_SERVE" --listen "unix:$T/s.sock" mem:lots
  [ "$status" -eq 2 ]
  [[ "$output" == *"size 'lots'"* ]]
  run "$NBD_SERVE" --listen "unix:$T/s.sock" "dir:$T/d?size=1M&colour=red"
  [ "$status" -eq 2 ]
  [[ "$output" == *"unknown parameter 'colour'"* ]]
  [ ! -e "$T/d" ]
  run "$NBD_SERVE" --listen "unix:$T/s.sock" "dir:$T/d?size=1M&max-open=1K"
  [ "$status" -eq 2 ]
  [[ "$output" == *"max-open"* ]]
  run "$NBD_SERVE" --listen "unix:$T/s.sock" tape:/dev/nst0
  [ "$status" -eq 2 ]
  [[ "$output" == *"not part of this build"* ]]
  run "$NBD_SERVE" --listen "unix:$T/s.sock" redis:unix:/tmp/r.sock
  [ "$status" -eq 2 ]
  [[ "$output" == *"?size=SIZE"* ]]
  run "$NBD_SERVE" --listen "unix:$T/s.sock" remote:fd:3
  [ "$status" -eq 2 ]
  [[ "$output" == *"remote:unix:PATH"* ]]
}

@test "a backend that cannot be opened is a runtime error (exit 1) that names it" {
  run "$NBD_SERVE" --listen "unix:$T/s.sock" "$T/missing.img"
  [ "$status" -eq 1 ]
  [[ "$output" == *"nbd-serve: unable to open the backend: open $T/missing.img: No such file or directory"* ]]
  [[ "$output" != *"?size="* ]]
  run "$NBD_SERVE" --listen "unix:$T/s.sock" "file:$T/missing.img"
  [ "$status" -eq 1 ]
  [[ "$output" == *"(add ?size=SIZE to create it)"* ]]
  run "$NBD_SERVE" --listen "unix:$T/s.sock" "dir:$T/d"
  [ "$status" -eq 1 ]
  [[ "$output" == *"needs ?size=SIZE"* ]]
  [ ! -e "$T/s.sock" ]
}

@test "SIGTERM right after start is a clean stop (exit 0), never a kill" {
  for i in 1 2 3 4 5 6 7 8; do
    "$NBD_SERVE" --listen "unix:$T/r$i.sock" mem:1M &
    pid=$!
    sleep 0.0$i
    kill -TERM "$pid"
    wait "$pid"
  done
}

@test "without --listen a terminal on stdin is refused instead of hanging" {
  require script bsdutils
  run script -qec "$NBD_SERVE mem:1M" /dev/null
  [ "$status" -ne 0 ]
  [[ "$output" == *"standard input is a terminal"* ]]
}

@test "socket activation: nbdinfo -- [ nbd-serve mem:64M ]" {
  require nbdinfo libnbd-bin
  run nbdinfo --size -- [ "$NBD_SERVE" mem:64M ]
  [ "$status" -eq 0 ]
  [ "$output" = 67108864 ]
}

@test "stdin/stdout: one connection, inetd style, exit 0 when it closes" {
  require nbdsh python3-libnbd
  run nbdsh -c 'h.connect_command(["'"$NBD_SERVE"'", "mem:1M"]); print(h.get_size()); h.shutdown()'
  [ "$status" -eq 0 ]
  [ "$output" = 1048576 ]
}

@test "--listen fd:N serves a listening socket or a single connected one" {
  require nbdinfo libnbd-bin
  run nbdinfo --size -- [ "$NBD_SERVE" --listen fd:3 mem:4M ]
  [ "$status" -eq 0 ]
  [ "$output" = 4194304 ]
  run nbdsh -c 'h.connect_command(["'"$NBD_SERVE"'", "--listen", "fd:0", "mem:2M"]); print(h.get_size()); h.shutdown()'
  [ "$status" -eq 0 ]
  [ "$output" = 2097152 ]
  run "$NBD_SERVE" --listen fd:77 mem:1M
  [ "$status" -eq 2 ]
  [[ "$output" == *"no such descriptor"* ]]
}

@test "-v -v logs every request" {
  require nbdinfo libnbd-bin
  serve s -v -v mem:1M
  nbdinfo --map "$URI" >/dev/null
  grep -q 'debug: BLOCK_STATUS offset 0' "$T/s.log"
}

@test "--handshake-timeout drops a client that says nothing" {
  serve s --handshake-timeout 300ms mem:1M
  run "$PROBE" "unix:$SOCK" idle
  [ "$output" = closed ]
  grep -q 'timed out' "$T/s.log"
  nbdinfo --size "$URI"
  run "$NBD_SERVE" --handshake-timeout 5x mem:1M
  [ "$status" -eq 2 ]
  [[ "$output" == *"unknown unit"* ]]
}

@test "--listen unix: many clients at once; data written by one is read by another" {
  require nbdcopy libnbd-bin
  random_file "$T/in" 8
  serve s mem:8M
  nbdcopy "$T/in" "$URI"
  nbdcopy "$URI" "$T/out1" & a=$!
  nbdcopy "$URI" "$T/out2" & b=$!
  wait $a; wait $b
  cmp "$T/in" "$T/out1"
  cmp "$T/in" "$T/out2"
}

@test "--listen tcp: empty host means loopback, and IPv6 works" {
  require nbdinfo libnbd-bin
  "$NBD_SERVE" --listen tcp::0 --run 'nbdinfo --size "$uri"; echo "port=$port"' mem:1M >"$T/out" 2>&1
  grep -qx 1048576 "$T/out"
  grep -q '^port=[1-9]' "$T/out"
  if ip -6 addr show lo 2>/dev/null | grep -q '::1'; then
    run "$NBD_SERVE" --listen 'tcp:[::1]:0' --run 'nbdinfo --size "$uri"' mem:2M
    [ "$status" -eq 0 ]
    [ "$output" = 2097152 ]
  fi
}

@test "--run sets \$uri and \$unixsocket and exits with the command's status" {
  require nbdinfo libnbd-bin
  run "$NBD_SERVE" --run 'test -S "$unixsocket" && nbdinfo --size "$uri"' mem:3M
  [ "$status" -eq 0 ]
  [ "$output" = 3145728 ]
  run "$NBD_SERVE" --run 'exit 7' mem:1M
  [ "$status" -eq 7 ]
}

@test "--name, --description and --list" {
  require nbdinfo libnbd-bin
  serve s --name disk0 --description "test disk" mem:1M
  run nbdinfo --list --json "$URI"
  [ "$status" -eq 0 ]
  [[ "$output" == *'"export-name": "disk0"'* ]]
  [[ "$output" == *'"description": "test disk"'* ]]
  run nbdinfo --size "nbd+unix:///disk0?socket=$SOCK"
  [ "$output" = 1048576 ]
  run nbdinfo "nbd+unix:///other?socket=$SOCK"
  [ "$status" -ne 0 ]
}

@test "flags: --can and --is reflect the backend and --read-only" {
  require nbdinfo libnbd-bin
  truncate -s 1M "$T/disk.img"
  serve rw "$T/disk.img"
  for f in flush fua trim zero fast-zero multi-conn cache df; do
    nbdinfo --can "$f" "$URI" || { echo "cannot $f"; false; }
  done
  run nbdinfo --is read-only "$URI"
  [ "$status" -ne 0 ]
  serve ro --read-only "$T/disk.img"
  nbdinfo --is read-only "$URI"
  run nbdinfo --can trim "$URI"
  [ "$status" -ne 0 ]
}

@test "--map shows holes of a sparse file through base:allocation" {
  require nbdinfo libnbd-bin
  truncate -s 4M "$T/sparse.img"
  dd if=/dev/urandom of="$T/sparse.img" bs=64K count=1 seek=16 conv=notrunc status=none
  serve s "$T/sparse.img"
  run nbdinfo --map "$URI"
  [ "$status" -eq 0 ]
  echo "$output"
  [[ "$output" == *"hole,zero"* ]]
  [[ "$output" == *"data"* ]]
  [[ "$(echo "$output" | awk '$4=="data"{print $1}')" == *1048576* ]]
}

@test "dir: backend serves chunks as files and missing chunks as zeros" {
  require nbdcopy libnbd-bin
  random_file "$T/in" 1
  serve s "dir:$T/chunks?size=4M&chunk=64K"
  nbdcopy "$T/in" "$URI"
  [ "$(ls "$T/chunks" | wc -l)" -eq 16 ]
  nbdcopy "$URI" "$T/out"
  cmp -n 1048576 "$T/in" "$T/out"
  [ "$(tail -c +1048577 "$T/out" | tr -d '\0' | wc -c)" -eq 0 ]
}

@test "SIGTERM: stops, finishes in-flight work, syncs and exits 0" {
  require nbdcopy libnbd-bin
  random_file "$T/in" 16
  truncate -s 16M "$T/disk.img"
  serve s "$T/disk.img"
  nbdcopy "$T/in" "$URI"
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID"
  cmp "$T/in" "$T/disk.img"
  [ ! -e "$SOCK" ]  # the socket file is removed on exit
}

@test "--max-connections refuses clients over the limit and logs it" {
  require nbdsh python3-libnbd
  serve s --max-connections 1 mem:1M
  nbdsh -u "$URI" -c 'import time; time.sleep(3)' &
  PIDS+=($!)
  sleep 0.5
  run nbdinfo --size "$URI"
  [ "$status" -ne 0 ]
  grep -q 'refusing a connection' "$T/s.log"
}

# Bad input, each with what the NBD spec prescribes. nbd-probe prints the
# server's answer; a second client afterwards proves nothing else suffered.
PROBES=0
probe_case() {
  PROBES=$((PROBES + 1))
  serve "p$PROBES" "$@"
  run "$PROBE" "unix:$SOCK" "$CASE"
  echo "$output"
  nbdinfo --size "$URI" >/dev/null || { echo "server did not survive $CASE"; false; }
}

@test "bad input: unknown client flags close the connection" {
  CASE=bad-client-flags probe_case mem:1M
  [ "$output" = closed ]
}

@test "bad input: a wrong option magic closes the connection" {
  CASE=bad-option-magic probe_case mem:1M
  [ "$output" = closed ]
}

@test "bad input: an unknown option gets ERR_UNSUP and negotiation goes on" {
  CASE=unknown-option probe_case mem:1M
  [ "${lines[0]}" = ERR_UNSUP ]
  [ "${lines[1]}" = in-sync ]
}

@test "bad input: option data over 64K gets ERR_TOO_BIG without allocating it" {
  CASE=oversize-option probe_case mem:1M
  [ "${lines[0]}" = ERR_TOO_BIG ]
  [ "${lines[1]}" = in-sync ]
}

@test "bad input: a malformed GO gets ERR_INVALID, an unknown export ERR_UNKNOWN" {
  CASE=malformed-go probe_case mem:1M
  [ "${lines[0]}" = ERR_INVALID ]
  [ "${lines[1]}" = in-sync ]
  CASE=unknown-export probe_case mem:1M
  [ "${lines[0]}" = ERR_UNKNOWN ]
}

@test "bad input: STARTTLS without TLS configured gets ERR_POLICY; ABORT gets ACK" {
  CASE=starttls probe_case mem:1M
  [ "${lines[0]}" = ERR_POLICY ]
  CASE=abort probe_case mem:1M
  [ "${lines[0]}" = ACK ]
  [ "${lines[1]}" = closed ]
}

@test "bad input: a wrong request magic is a hard disconnect" {
  CASE=bad-request-magic probe_case mem:1M
  [ "$output" = closed ]
  grep -q 'bad request magic' "$T/p1.log"
}

@test "bad input: unknown commands and flags get EINVAL and the stream stays in sync" {
  CASE=unknown-command probe_case mem:1M
  [ "${lines[0]}" = EINVAL ]
  [ "${lines[1]}" = in-sync ]
  CASE=unknown-flag probe_case mem:1M
  [ "${lines[0]}" = EINVAL ]
}

@test "bad input: out-of-range reads get EINVAL, writes ENOSPC, no wraparound" {
  CASE=read-beyond-end probe_case mem:1M
  [ "${lines[0]}" = EINVAL ]
  CASE=write-beyond-end probe_case mem:1M
  [ "${lines[0]}" = ENOSPC ]
  [ "${lines[1]}" = in-sync ]
  CASE=offset-overflow probe_case mem:1M
  [ "${lines[0]}" = EINVAL ]
}

@test "bad input: requests over the maximum payload get EINVAL (write payload skipped)" {
  CASE=read-over-max probe_case mem:64M
  [ "${lines[0]}" = EINVAL ]
  CASE=write-over-max probe_case mem:64M
  [ "${lines[0]}" = EINVAL ]
  [ "${lines[1]}" = in-sync ]
}

@test "bad input: requests not aligned to --min-block-size get EINVAL" {
  CASE=misaligned-read probe_case --min-block-size 512 mem:1M
  [ "${lines[0]}" = EINVAL ]
  [ "${lines[1]}" = in-sync ]
  run nbdinfo --json "$URI"
  [[ "$output" == *'"block_size_minimum": 512'* ]]
}

@test "bad input: writes and trims to a read-only export get EPERM" {
  CASE=write probe_case --read-only mem:1M
  [ "${lines[0]}" = EPERM ]
  [ "${lines[1]}" = in-sync ]
  CASE=trim probe_case --read-only mem:1M
  [ "${lines[0]}" = EPERM ]
}

@test "bad input: BLOCK_STATUS without a negotiated context gets EINVAL" {
  CASE=block-status-without-context probe_case mem:1M
  [ "${lines[0]}" = EINVAL ]
}

@test "bad input: a client vanishing mid-request affects nobody else" {
  CASE=disconnect-mid-write probe_case mem:1M
  [ "$output" = sent-partial ]
  CASE=disconnect-mid-header probe_case mem:1M
  sleep 0.2
  grep -q 'in the middle of a WRITE payload' "$T/p1.log"
  kill -0 "$SERVER_PID"
}

@test "examples/serve-and-inspect.sh (make demo) runs to the end" {
  require qemu-io qemu-utils
  run "$ROOT/examples/serve-and-inspect.sh"
  echo "$output"
  [ "$status" -eq 0 ]
}

@test "bash completion offers options, TLS modes and endpoint schemes" {
  source "$ROOT/completions/nbd-serve"
  COMP_WORDS=(nbd-serve --tl); COMP_CWORD=1; unset COMP_LINE
  _nbd_serve
  [[ " ${COMPREPLY[*]} " == *" --tls "* && " ${COMPREPLY[*]} " == *" --tls-psk "* ]]
  COMP_WORDS=(nbd-serve --tls r); COMP_CWORD=2
  _nbd_serve
  [ "${COMPREPLY[*]}" = require ]
  COMP_WORDS=(nbd-serve --listen t); COMP_CWORD=2
  _nbd_serve
  [ "${COMPREPLY[*]}" = tcp: ]
  # Every long option of --help is offered.
  COMP_WORDS=(nbd-serve --); COMP_CWORD=1
  _nbd_serve
  for opt in $("$NBD_SERVE" --help | grep -o -- '--[a-z-]*' | sort -u); do
    [[ " ${COMPREPLY[*]} " == *" $opt "* ]] || { echo "missing $opt"; false; }
  done
}
