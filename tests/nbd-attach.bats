#!/usr/bin/env bats
# nbd-attach: the promises of man/nbd-attach.1 that a host can check without
# a kernel NBD device: --help, --version, every usage error (exit 2, before
# anything is started), and what happens where the nbd module is missing
# (exit 1 naming 'modprobe nbd', no server left behind). Attaching for real is
# tested against the kernel in a VM (tests/kernel).

load helpers/common

NBD_ATTACH=$BIN/nbd-attach

setup() { common_setup; }
teardown() { common_teardown; }

# expect_usage FRAGMENT ARGS...: nbd-attach ARGS is a usage error (exit 2)
# whose message contains FRAGMENT.
expect_usage() {
  local fragment=$1
  shift
  run "$NBD_ATTACH" "$@"
  echo "nbd-attach $*"
  echo "  status $status: $output"
  [ "$status" -eq 2 ] || return 1
  [[ ${lines[0]} == "nbd-attach: usage: "* ]] || return 1
  [[ $output == *"$fragment"* ]] || return 1
  [[ $output == *"Try 'nbd-attach --help' for more information."* ]]
}

# The host has no nbd module (the usual dev and CI machine).
require_no_nbd_module() {
  [[ ! -d /sys/module/nbd ]] || skip "the nbd module is loaded on this host"
}

@test "--help prints the usage and exits 0" {
  run "$NBD_ATTACH" --help
  [ "$status" -eq 0 ]
  [ "${lines[0]}" = "Usage: nbd-attach [OPTIONS] ENDPOINT | NBD-URI" ]
  [[ $output == *"nbd-attach [OPTIONS] -- COMMAND [ARGS...]"* ]]
  [[ $output == *"nbd-attach --detach DEVICE"* ]]
  [[ $output == *"nbd-attach --list"* ]]
  [[ $output == *"--persist"* ]]
  [[ $output == *"Exit status: 0 attached"* ]]
  run "$NBD_ATTACH" -h
  [ "$status" -eq 0 ]
  [ "${lines[0]}" = "Usage: nbd-attach [OPTIONS] ENDPOINT | NBD-URI" ]
}

@test "--version prints the version and exits 0" {
  run "$NBD_ATTACH" --version
  [ "$status" -eq 0 ]
  [[ "$output" =~ ^nbd-attach\ [0-9]+\.[0-9]+\.[0-9]+ ]]
  run "$NBD_ATTACH" -V
  [ "$status" -eq 0 ]
  [[ "$output" =~ ^nbd-attach\ [0-9]+\.[0-9]+\.[0-9]+ ]]
}

@test "usage: a target is needed, and only one kind of it" {
  expect_usage "give an ENDPOINT, an NBD URI, or -- COMMAND"
  expect_usage "give either ENDPOINT or -- COMMAND, not both" "unix:$T/s.sock" -- "$NBD_SERVE" mem:1M
  expect_usage "nothing after --: give the server COMMAND" --
  expect_usage "nothing after --: give the server COMMAND" -r --
  expect_usage "unrecognised option '--bogus'" --bogus "unix:$T/s.sock"
}

@test "usage: --connections is between 1 and 64" {
  expect_usage "--connections: between 1 and 64" --connections 0 "unix:$T/s.sock"
  expect_usage "--connections: between 1 and 64" --connections 65 "unix:$T/s.sock"
  expect_usage "--connections: between 1 and 64" -C 0 -- "$NBD_SERVE" mem:1M
  expect_usage "for option '--connections' is invalid" -C many "unix:$T/s.sock"
}

@test "usage: --block-size is a power of two from 512 to the page size" {
  local page
  page=$(getconf PAGESIZE)
  [ "$page" -eq 4096 ] || skip "the messages below assume 4K pages"
  expect_usage "--block-size: the kernel takes a power of two from 512 to the page size (4K)" \
    --block-size 1000 "unix:$T/s.sock"
  expect_usage "--block-size: the kernel takes a power of two from 512 to the page size (4K)" \
    --block-size 8K "unix:$T/s.sock"
  expect_usage "--block-size: the kernel takes a power of two from 512 to the page size (4K)" \
    -b 256 "unix:$T/s.sock"
}

@test "usage: --persist refuses a spawned mem: server and --ioctl" {
  expect_usage "mem:" --persist -- "$NBD_SERVE" mem:1G
  [[ $output == *"--persist would restart a server whose data is only in memory"* ]]
  expect_usage "mem:" --persist -- "$NBD_SERVE" --read-only mem:64M
  expect_usage "--persist needs netlink, not --ioctl" --persist --ioctl "unix:$T/s.sock"
}

@test "usage: --dead-timeout only with --persist, and within 1s..24h" {
  expect_usage "--dead-timeout applies only with --persist" --dead-timeout 30s "unix:$T/s.sock"
  expect_usage "--dead-timeout: between 1s and 24h" --persist --dead-timeout 0 "unix:$T/s.sock"
  expect_usage "--dead-timeout: between 1s and 24h" --persist --dead-timeout 25h "unix:$T/s.sock"
  expect_usage "--timeout: between 1s and 24h" --timeout 0 "unix:$T/s.sock"
  expect_usage "unknown unit" --timeout 5x "unix:$T/s.sock"
}

@test "usage: an ENDPOINT is unix: or tcp:, and NBD URIs are checked" {
  expect_usage "ENDPOINT: expected unix:PATH, tcp:HOST:PORT or an NBD URI, not 'fd:3'" fd:3
  expect_usage "ENDPOINT: expected unix:PATH, tcp:HOST:PORT or an NBD URI, not '-'" -
  expect_usage "NBD URI 'nbd://': missing host" nbd://
  expect_usage "missing ?socket=PATH" "nbd+unix:///disk"
  expect_usage "--name: the URI already names the export" --name disk nbd://localhost/disk
  expect_usage "--name applies to an ENDPOINT, not a COMMAND" --name disk -- "$NBD_SERVE" mem:1M
  expect_usage "NBD URI: unsupported query parameter 'colour'" "nbd://localhost/disk?colour=red"
}

@test "usage: TLS options need an nbds:// URI" {
  expect_usage "TLS options need an nbds:// URI" --tls-ca "$T/ca.pem" "unix:$T/s.sock"
  expect_usage "TLS options need an nbds:// URI" --tls-psk "$T/keys.psk" nbd://localhost/disk
  expect_usage "TLS options need an nbds:// URI" --tls-cert "$T/c.pem" --tls-key "$T/k.pem" "unix:$T/s.sock"
  expect_usage "TLS options need an nbds:// URI" "nbd://localhost/disk?tls-certificates=$T"
}

@test "usage: --device and --detach want /dev/nbdN" {
  expect_usage "--device: 'bogus' is not an NBD device (expected /dev/nbdN)" --device bogus "unix:$T/s.sock"
  expect_usage "--detach: '/dev/sda' is not an NBD device (expected /dev/nbdN)" --detach /dev/sda
}

@test "without the nbd module, attaching an endpoint or URI fails (1) naming modprobe nbd" {
  require_no_nbd_module
  run "$NBD_ATTACH" "unix:$T/s.sock"
  echo "$output"
  [ "$status" -eq 1 ]
  [ "$output" = "nbd-attach: unable to attach: the kernel has no NBD devices: load the module with 'modprobe nbd'" ]
  run "$NBD_ATTACH" --persist -C 2 nbd://localhost/disk
  echo "$output"
  [ "$status" -eq 1 ]
  [[ $output == *"modprobe nbd"* ]]
}

# attach_to_file ARGS...: like `run nbd-attach ARGS`, but with the output in
# a file, so that a server left running cannot hold a pipe open and hang us.
attach_to_file() {
  status=0
  "$NBD_ATTACH" "$@" </dev/null >"$T/out" 2>&1 || status=$?
  output=$(<"$T/out")
  echo "nbd-attach $*"
  echo "  status $status: $output"
}

@test "without the nbd module, -- COMMAND fails (1) and leaves no server running" {
  require_no_nbd_module
  # One connection (stdin/stdout): a server that was started would create
  # the file it serves.
  attach_to_file -- "$NBD_SERVE" "file:$T/never.img?size=1M"
  [ "$status" -eq 1 ]
  [[ $output == "nbd-attach: unable to attach: "*"modprobe nbd"* ]]
  [ ! -e "$T/never.img" ]
  # mem:, and several connections by socket activation: a started server
  # would keep listening; its unique export name finds it.
  attach_to_file -- "$NBD_SERVE" --name "$T/marker-1" mem:1M
  [ "$status" -eq 1 ]
  [[ $output == *"modprobe nbd"* ]]
  TMPDIR=$T attach_to_file -C 4 --foreground --pidfile "$T/pid" -- "$NBD_SERVE" --name "$T/marker-4" mem:1M
  [ "$status" -eq 1 ]
  [[ $output == *"modprobe nbd"* ]]
  [ ! -e "$T/pid" ]
  [ -z "$(compgen -G "$T/nbd-attach.*")" ]  # no private socket directory left
  sleep 0.2
  run pgrep -f -- "$T/marker"
  echo "left running: $output"
  [ "$status" -eq 1 ]
}

@test "without the nbd module, --list and --detach fail (1) naming modprobe nbd" {
  require_no_nbd_module
  run "$NBD_ATTACH" --list
  echo "$output"
  [ "$status" -eq 1 ]
  [ "$output" = "nbd-attach: unable to list NBD devices: there are no NBD devices: is the nbd module loaded? (modprobe nbd)" ]
  run "$NBD_ATTACH" --detach /dev/nbd0
  echo "$output"
  [ "$status" -eq 1 ]
  [[ $output == "nbd-attach: unable to detach /dev/nbd0: "*"modprobe nbd"* ]]
  run "$NBD_ATTACH" --detach nbd3
  [ "$status" -eq 1 ]
  [[ $output == "nbd-attach: unable to detach /dev/nbd3: "* ]]
}

@test "the man page documents every option of --help" {
  local opt
  for opt in $("$NBD_ATTACH" --help | grep -o -- '--[a-z-]*' | sort -u); do
    [[ $opt == -- ]] && continue
    grep -q -- "^\.It Fl .*Fl \\\\${opt#-}\b\|^\.It Fl \\\\${opt#-}\b" "$ROOT/man/nbd-attach.1" ||
      { echo "man/nbd-attach.1 does not document $opt"; return 1; }
  done
}

@test "examples/direct-mount.sh runs to OK, or skips (77) where no nbd device can be made" {
  run "$ROOT/examples/direct-mount.sh"
  echo "$output"
  if [ "$status" -eq 77 ]; then
    [[ $output == "direct-mount: skipped: "* ]]
    if [ "$(id -u)" -eq 0 ]; then [ ! -d /sys/module/nbd ]; fi
  else
    [ "$status" -eq 0 ]
    [ "${lines[-1]}" = OK ]
  fi
}

@test "bash completion offers options, endpoint schemes and unix: sockets" {
  source "$ROOT/completions/nbd-attach"
  unset COMP_LINE
  COMP_WORDS=(nbd-attach --de); COMP_CWORD=1
  _nbd_attach
  [ "${COMPREPLY[*]}" = "--device --dead-timeout --detach" ]
  COMP_WORDS=(nbd-attach --tls-p); COMP_CWORD=1
  _nbd_attach
  [ "${COMPREPLY[*]}" = --tls-psk ]
  COMP_WORDS=(nbd-attach un); COMP_CWORD=1
  _nbd_attach
  [ "${COMPREPLY[*]}" = unix: ]
  COMP_WORDS=(nbd-attach nbds); COMP_CWORD=1
  _nbd_attach
  [ "${COMPREPLY[*]}" = "nbds:// nbds+unix:///" ]
  touch "$T/s.sock" "$T/other"
  COMP_WORDS=(nbd-attach "unix:$T/s"); COMP_CWORD=1
  _nbd_attach
  [ "${COMPREPLY[*]}" = "unix:$T/s.sock" ]
  COMP_WORDS=(nbd-attach --pidfile "$T/o"); COMP_CWORD=2
  _nbd_attach
  [ "${COMPREPLY[*]}" = "$T/other" ]
  COMP_WORDS=(nbd-attach -b ""); COMP_CWORD=2
  _nbd_attach
  [ "${COMPREPLY[*]}" = "512 1K 2K 4K" ]
  # Real completion: bash replaces only what follows the last ':'.
  COMP_LINE="nbd-attach unix:$T/s"; COMP_POINT=${#COMP_LINE}
  _nbd_attach
  [ "${COMPREPLY[*]}" = "$T/s.sock" ]
  # Every long option of --help is offered.
  unset COMP_LINE
  COMP_WORDS=(nbd-attach --); COMP_CWORD=1
  _nbd_attach
  for opt in $("$NBD_ATTACH" --help | grep -o -- '--[a-z-]*' | sort -u); do
    [[ $opt == -- ]] && continue
    [[ " ${COMPREPLY[*]} " == *" $opt "* ]] || { echo "missing $opt"; false; }
  done
}

@test "bash completion: after -- a command, then its files" {
  source "$ROOT/completions/nbd-attach"
  unset COMP_LINE
  COMP_WORDS=(nbd-attach -C 4 -- bas); COMP_CWORD=4
  _nbd_attach
  [[ " ${COMPREPLY[*]} " == *" bash "* ]]
  [[ " ${COMPREPLY[*]} " != *" --"* ]]
  touch "$T/disk.img"
  COMP_WORDS=(nbd-attach -- nbd-serve "$T/di"); COMP_CWORD=3
  _nbd_attach
  [ "${COMPREPLY[*]}" = "$T/disk.img" ]
  COMP_WORDS=(nbd-attach -- nbd-serve --re); COMP_CWORD=3
  _nbd_attach
  [ "${#COMPREPLY[@]}" -eq 0 ]  # the server's options are not nbd-attach's
}

@test "bash completion: --device and --detach offer the /dev/nbdN that exist" {
  source "$ROOT/completions/nbd-attach"
  unset COMP_LINE
  local -a devs=()
  local d
  for d in /dev/nbd[0-9]*; do [[ -b $d && $d =~ ^/dev/nbd[0-9]+$ ]] && devs+=("$d"); done
  ((${#devs[@]} > 0)) || skip "no /dev/nbdN on this host"
  COMP_WORDS=(nbd-attach --device /dev/nb); COMP_CWORD=2
  _nbd_attach
  [ "${#COMPREPLY[@]}" -eq "${#devs[@]}" ]
  [[ " ${COMPREPLY[*]} " == *" ${devs[0]} "* ]]
  COMP_WORDS=(nbd-attach --detach "${devs[0]}"); COMP_CWORD=2
  _nbd_attach
  [[ " ${COMPREPLY[*]} " == *" ${devs[0]} "* ]]
}
