#!/usr/bin/env bats
# ram-dl: the promises of man/ram-dl.1 that a host can check without a
# kernel NBD device: --help, --version, every usage error (exit 2, before
# anything is opened), TLS credentials that cannot be loaded (exit 1), the
# root check, and the order of the checks where the nbd module is missing
# (exit 1 naming 'modprobe nbd', before the remote is dialled; no process
# or pid file left). Attaching, swap, write-through, an unreachable remote
# and a remote restarted under swap are tested against the kernel in a VM
# (tests/kernel/ram-dl.sh, run by tests/kernel/run-smoke).

load helpers/common

RAM_DL=$BIN/ram-dl
RAM_UL=$BIN/ram-ul

setup() { common_setup; }
teardown() { common_teardown; }

# expect_usage FRAGMENT ARGS...: ram-dl ARGS is a usage error (exit 2) whose
# message contains FRAGMENT.
expect_usage() {
  local fragment=$1
  shift
  run "$RAM_DL" "$@"
  echo "ram-dl $*"
  echo "  status $status: $output"
  [ "$status" -eq 2 ] || return 1
  [[ ${lines[0]} == "ram-dl: usage: "* ]] || return 1
  [[ $output == *"$fragment"* ]] || return 1
  [[ $output == *"Try 'ram-dl --help' for more information."* ]]
}

# dl_to_file ARGS...: like `run ram-dl ARGS`, with the output in a file, so
# that a process left running cannot hold a pipe open and hang us.
dl_to_file() {
  status=0
  "$RAM_DL" "$@" </dev/null >"$T/out" 2>&1 || status=$?
  output=$(<"$T/out")
  echo "ram-dl $*"
  echo "  status $status: $output"
}

# The host has no nbd module (the usual dev and CI machine).
require_no_nbd_module() {
  [[ ! -d /sys/module/nbd ]] || skip "the nbd module is loaded on this host"
}

@test "--help prints the usage and exits 0" {
  run "$RAM_DL" --help
  [ "$status" -eq 0 ]
  [ "${lines[0]}" = "Usage: ram-dl [OPTIONS] [ENDPOINT]" ]
  [[ $output == *"(default"$'\n'"tcp:127.0.0.1:1337)"* ]]
  [[ $output == *"--no-swap"* ]]
  [[ $output == *"(default 64)"* ]]
  [[ $output == *"Exit status: 0 attached"* ]]
  run "$RAM_DL" -h
  [ "$status" -eq 0 ]
  [ "${lines[0]}" = "Usage: ram-dl [OPTIONS] [ENDPOINT]" ]
}

@test "--version prints the version and exits 0" {
  run "$RAM_DL" --version
  [ "$status" -eq 0 ]
  [[ "$output" =~ ^ram-dl\ [0-9]+\.[0-9]+\.[0-9]+ ]]
  run "$RAM_DL" -V
  [ "$status" -eq 0 ]
  [[ "$output" =~ ^ram-dl\ [0-9]+\.[0-9]+\.[0-9]+ ]]
}

@test "usage: an ENDPOINT is unix: or tcp:, and only one" {
  expect_usage "ENDPOINT: expected unix:PATH or tcp:HOST:PORT of a ram-ul, not 'fd:3'" fd:3
  expect_usage "ENDPOINT: expected unix:PATH or tcp:HOST:PORT of a ram-ul, not '-'" -
  expect_usage "endpoint 'tcp:nohost'" tcp:nohost
  expect_usage "too many positional options" "unix:$T/a.sock" "unix:$T/b.sock"
  expect_usage "unrecognised option '--bogus'" --bogus "unix:$T/s.sock"
}

@test "usage: --priority is swapon's -1..32767, and only for swap" {
  expect_usage "--priority: between -1 and 32767" --priority 32768 "unix:$T/s.sock"
  expect_usage "--priority: between -1 and 32767" -p -2 "unix:$T/s.sock"
  expect_usage "the argument ('high') for option '--priority' is invalid" -p high "unix:$T/s.sock"
  expect_usage "--priority applies to swap, not with --no-swap" --no-swap -p 5 "unix:$T/s.sock"
  expect_usage "--priority applies to swap, not with --no-swap" --no-swap --priority=-1 "unix:$T/s.sock"
}

@test "usage: --max-inflight, --timeout and --device are checked" {
  expect_usage "--max-inflight: between 1 and 1024" --max-inflight 0 "unix:$T/s.sock"
  expect_usage "--max-inflight: between 1 and 1024" --max-inflight 1025 "unix:$T/s.sock"
  expect_usage "--timeout: between 1s and 24h" --timeout 0 "unix:$T/s.sock"
  expect_usage "--timeout: between 1s and 24h" -t 25h "unix:$T/s.sock"
  expect_usage "unknown unit" --timeout 5x "unix:$T/s.sock"
  expect_usage "--device: 'bogus' is not an NBD device (expected /dev/nbdN)" --device bogus "unix:$T/s.sock"
}

@test "usage: TLS options that do not go together" {
  expect_usage "--tls-cert and --tls-key go together" --tls-cert "$T/c.pem" "unix:$T/s.sock"
  expect_usage "--tls-cert and --tls-key go together" --tls-key "$T/k.pem" "unix:$T/s.sock"
  expect_usage "--tls-identity names a key of --tls-psk FILE: give both" --tls-identity alice "unix:$T/s.sock"
}

@test "usage errors are found before anything is opened: no pid file, no connection" {
  ul s -v --size 1M
  expect_usage "--priority applies to swap" --no-swap -p 3 --pidfile "$T/pid" "unix:$WSOCK"
  expect_usage "--max-inflight" --max-inflight 0 --pidfile "$T/pid" "unix:$WSOCK"
  [ ! -e "$T/pid" ]
  sleep 0.2
  run grep -c 'new connection' "$T/s.log"
  [ "$output" = 0 ]
}

@test "TLS credentials that cannot be loaded fail (1) naming the file, before anything else" {
  dl_to_file --tls-psk "$T/none.psk" "unix:$T/s.sock"
  [ "$status" -eq 1 ]
  [ "$output" = "ram-dl: unable to set up TLS: open PSK file $T/none.psk: No such file or directory" ]
  dl_to_file --tls-ca "$T/none.pem" "unix:$T/s.sock"
  [ "$status" -eq 1 ]
  [[ $output == "ram-dl: unable to set up TLS: load CA $T/none.pem: "*"No such file"* ]]
  echo "not a certificate" >"$T/bad.pem"
  dl_to_file --tls-cert "$T/bad.pem" --tls-key "$T/bad.pem" "tcp:localhost:1337"
  [ "$status" -eq 1 ]
  [[ $output == "ram-dl: unable to set up TLS: load certificate $T/bad.pem: "* ]]
  echo "alice:00112233445566778899aabbccddeeff" >"$T/keys.psk"
  dl_to_file --tls-psk "$T/keys.psk" --tls-identity bob "unix:$T/s.sock"
  [ "$status" -eq 1 ]
  [ "$output" = "ram-dl: unable to set up TLS: $T/keys.psk: no key for identity 'bob'" ]
}

@test "not root: fails (1) saying so, before the kernel or the remote is asked" {
  require setpriv util-linux
  setpriv --reuid=65534 --regid=65534 --clear-groups "$RAM_DL" "unix:$T/s.sock" >"$T/out" 2>&1 && status=0 || status=$?
  output=$(<"$T/out")
  echo "$output"
  [ "$status" -eq 1 ]
  [ "$output" = "ram-dl: unable to attach: needs root (CAP_SYS_ADMIN)" ]
}

@test "without the nbd module, ram-dl fails (1) naming modprobe nbd, before it dials the remote" {
  require_no_nbd_module
  [ "$(id -u)" -eq 0 ] || skip "needs root: as another user the root check comes first"
  ul s -v --size 1M
  dl_to_file --pidfile "$T/pid" "unix:$WSOCK"
  [ "$status" -eq 1 ]
  [ "$output" = "ram-dl: unable to attach: the kernel has no NBD devices: load the module with 'modprobe nbd'" ]
  dl_to_file --no-swap --foreground --pidfile "$T/pid" "unix:$WSOCK"
  [ "$status" -eq 1 ]
  [[ $output == *"modprobe nbd"* ]]
  # The kernel is asked first: an unreachable remote gives the same answer
  # (the remote's own errors are checked in the VM, tests/kernel/ram-dl.sh).
  dl_to_file "unix:$T/nope.sock"
  [ "$status" -eq 1 ]
  [[ $output == *"modprobe nbd"* ]]
  [ ! -e "$T/pid" ]
  sleep 0.2
  run grep -c 'new connection' "$T/s.log"
  [ "$output" = 0 ]
  run pgrep -f -- "$RAM_DL .*$T"
  echo "left running: $output"
  [ "$status" -eq 1 ]
}

@test "the man page documents every option of --help" {
  local opt
  for opt in $("$RAM_DL" --help | grep -E '^ +-' | grep -o -- '--[a-z-]*' | sort -u); do
    grep -q -- "^\.It Fl .*Fl \\\\${opt#-}\b\|^\.It Fl \\\\${opt#-}\b" "$ROOT/man/ram-dl.1" ||
      { echo "man/ram-dl.1 does not document $opt"; return 1; }
  done
}

@test "examples/remote-swap.sh runs to OK, or skips (77) where no nbd swap can be made" {
  run "$ROOT/examples/remote-swap.sh"
  echo "$output"
  if [ "$status" -eq 77 ]; then
    [[ $output == "remote-swap: skipped: "* ]]
  else
    [ "$status" -eq 0 ]
    [ "${lines[-1]}" = OK ]
  fi
}

@test "bash completion offers options, endpoint schemes, unix: sockets and priorities" {
  source "$ROOT/completions/ram-dl"
  unset COMP_LINE
  COMP_WORDS=(ram-dl --no); COMP_CWORD=1
  _ram_dl
  [ "${COMPREPLY[*]}" = "--no-swap --no-compress" ]
  COMP_WORDS=(ram-dl --tls-i); COMP_CWORD=1
  _ram_dl
  [ "${COMPREPLY[*]}" = --tls-identity ]
  COMP_WORDS=(ram-dl t); COMP_CWORD=1
  _ram_dl
  [ "${COMPREPLY[*]}" = tcp: ]
  touch "$T/ram.sock" "$T/other"
  COMP_WORDS=(ram-dl "unix:$T/r"); COMP_CWORD=1
  _ram_dl
  [ "${COMPREPLY[*]}" = "unix:$T/ram.sock" ]
  COMP_WORDS=(ram-dl --pidfile "$T/o"); COMP_CWORD=2
  _ram_dl
  [ "${COMPREPLY[*]}" = "$T/other" ]
  COMP_WORDS=(ram-dl -p ""); COMP_CWORD=2
  _ram_dl
  [ "${COMPREPLY[*]}" = "-1 0 10 100 32767" ]
  COMP_WORDS=(ram-dl --max-inflight ""); COMP_CWORD=2
  _ram_dl
  [ "${#COMPREPLY[@]}" -eq 0 ]
  # Real completion: bash replaces only what follows the last ':'.
  COMP_LINE="ram-dl unix:$T/r"; COMP_POINT=${#COMP_LINE}
  _ram_dl
  [ "${COMPREPLY[*]}" = "$T/ram.sock" ]
  COMP_LINE="ram-dl --tls-psk=$T/ot"; COMP_POINT=${#COMP_LINE}
  _ram_dl
  [ "${COMPREPLY[*]}" = "$T/other" ]
  # Every option of --help is offered.
  unset COMP_LINE
  COMP_WORDS=(ram-dl -); COMP_CWORD=1
  _ram_dl
  for opt in $("$RAM_DL" --help | grep -E '^ +-' | grep -oE -- '(^|[ ,])--?[a-zA-Z][a-z-]*' | tr -d ' ,' | sort -u); do
    [[ " ${COMPREPLY[*]} " == *" $opt "* ]] || { echo "missing $opt"; false; }
  done
}
