#!/usr/bin/env bats
# net-proxy (tests/helpers/net-proxy.cpp): one @test per promise of its
# --help. The proxy is what other suites use to break and slow the network,
# so here it is judged on its own: nbd-serve stands behind it, libnbd's
# clients (nbdcopy, nbdinfo, nbdsh) go through it, and python3 plays raw
# peers where a half-close or several control commands on one connection
# are needed. Timing checks are lower bounds only: a loaded machine may be
# slow, never fast.

load helpers/common

NET_PROXY=${NET_PROXY:-$ROOT/build/tests/net-proxy}

setup() {
  common_setup
  export T
}
teardown() { common_teardown; }

# proxy NAME ARGS...: net-proxy --listen unix:$T/NAME.sock --control
# unix:$T/NAME.ctl ARGS in the background, log in $T/NAME.log, stdout in
# $T/NAME.out; sets PSOCK, CTL, PURI (an NBD URI through the proxy) and
# PROXY_PID.
proxy() {
  local name=$1
  shift
  PSOCK=$T/$name.sock
  CTL=$T/$name.ctl
  PURI="nbd+unix:///?socket=$PSOCK"
  "$NET_PROXY" --listen "unix:$PSOCK" --control "unix:$CTL" "$@" >"$T/$name.out" 2>"$T/$name.log" &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_for_socket "$CTL"  # bound after the listening socket
}

# ctl COMMAND: one control command to the proxy at $CTL.
ctl() { "$NET_PROXY" --control "unix:$CTL" --send "$*"; }

# counter NAME: one number from the stats line.
counter() { ctl stats | tr ' ' '\n' | sed -n "s/^$1=//p"; }

# elapsed_ms COMMAND...: runs COMMAND (which must succeed), prints its
# wall-clock time in milliseconds.
elapsed_ms() {
  local start end
  start=$(date +%s%N)
  "$@" >/dev/null
  end=$(date +%s%N)
  echo $(((end - start) / 1000000))
}

# exits_within SECONDS PID: wait for PID (a child) and return its status,
# failing if it is still running after SECONDS.
exits_within() {
  local i
  for ((i = 0; i < $1 * 20; i++)); do
    kill -0 "$2" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$2" 2>/dev/null; then echo "pid $2 still running after $1 s" >&2; return 99; fi
  local st=0
  wait "$2" || st=$?
  return "$st"
}

# wait_for_file PATH: for a background client to say it got somewhere.
wait_for_file() {
  local i
  for ((i = 0; i < 200; i++)); do
    [[ -e $1 ]] && return 0
    sleep 0.05
  done
  echo "$1 did not appear" >&2
  return 1
}

# live_client: an nbdsh client through the proxy that reads once, creates
# $T/connected, waits for $T/go, then tries a second read and prints
# read-ok or read-failed to $T/client.out; sets CLIENT_PID.
live_client() {
  cat >"$T/client.py" <<'EOF'
import os, time
T = os.environ["T"]
h.pread(512, 0)
open(T + "/connected", "w").close()
while not os.path.exists(T + "/go"):
    time.sleep(0.02)
try:
    h.pread(512, 0)
    print("read-ok")
except nbd.Error:
    print("read-failed")
EOF
  nbdsh -u "$PURI" -c "exec(open('$T/client.py').read())" >"$T/client.out" 2>&1 &
  CLIENT_PID=$!
  PIDS+=("$CLIENT_PID")
  wait_for_file "$T/connected"
}

@test "--help prints the usage and exits 0" {
  run "$NET_PROXY" --help
  [ "$status" -eq 0 ]
  [[ "${lines[0]}" == "Usage: net-proxy --listen ENDPOINT --connect ENDPOINT [OPTIONS]" ]]
  [[ "$output" == *"net-proxy --control unix:PATH --send COMMAND"* ]]
  for word in --delay --cut-after --control --send cut down up "delay DURATION" stats; do
    [[ "$output" == *"$word"* ]] || { echo "--help does not mention $word"; false; }
  done
}

@test "usage errors exit 2 with the reason and a pointer to --help" {
  run "$NET_PROXY"
  [ "$status" -eq 2 ]
  [[ "$output" == *"net-proxy: usage: give --listen ENDPOINT and --connect ENDPOINT"* ]]
  [[ "$output" == *"Try 'net-proxy --help'"* ]]
  run "$NET_PROXY" --listen "unix:$T/p.sock"
  [ "$status" -eq 2 ]
  run "$NET_PROXY" --bogus
  [ "$status" -eq 2 ]
  [[ "$output" == *"unrecognised option '--bogus'"* ]]
  run "$NET_PROXY" --listen "unix:$T/p.sock" --connect "unix:$T/s.sock" extra
  [ "$status" -eq 2 ]
  [[ "$output" == *"unexpected argument 'extra'"* ]]
  run "$NET_PROXY" --listen - --connect "unix:$T/s.sock"
  [ "$status" -eq 2 ]
  [[ "$output" == *"--listen: expected unix:PATH or tcp:HOST:PORT"* ]]
  run "$NET_PROXY" --listen "unix:$T/p.sock" --connect fd:3
  [ "$status" -eq 2 ]
  [[ "$output" == *"--connect: expected unix:PATH or tcp:HOST:PORT"* ]]
  run "$NET_PROXY" --listen tcp:nohost --connect "unix:$T/s.sock"
  [ "$status" -eq 2 ]
  [[ "$output" == *"endpoint 'tcp:nohost'"* ]]
  run "$NET_PROXY" --listen "unix:$T/p.sock" --connect "unix:$T/s.sock" --delay 10parsecs
  [ "$status" -eq 2 ]
  [[ "$output" == *"--delay: duration '10parsecs'"* ]]
  run "$NET_PROXY" --listen "unix:$T/p.sock" --connect "unix:$T/s.sock" --cut-after 0
  [ "$status" -eq 2 ]
  [[ "$output" == *"--cut-after: must be more than 0"* ]]
  run "$NET_PROXY" --listen "unix:$T/p.sock" --connect "unix:$T/s.sock" --cut-after lots
  [ "$status" -eq 2 ]
  run "$NET_PROXY" --listen "unix:$T/p.sock" --connect "unix:$T/s.sock" --control tcp::9
  [ "$status" -eq 2 ]
  [[ "$output" == *"--control: expected unix:PATH"* ]]
  run "$NET_PROXY" --send stats
  [ "$status" -eq 2 ]
  [[ "$output" == *"--send needs --control"* ]]
  run "$NET_PROXY" --control "unix:$T/c.sock" --send stats --delay 1s
  [ "$status" -eq 2 ]
  [[ "$output" == *"--send talks to a running proxy: --delay does not apply"* ]]
  [ ! -e "$T/p.sock" ]
}

@test "an endpoint that cannot be listened on is a runtime error (exit 1)" {
  run "$NET_PROXY" --listen "unix:$T/nodir/p.sock" --connect "unix:$T/s.sock"
  [ "$status" -eq 1 ]
  [[ "$output" == *"net-proxy: unable to listen: "*"No such file or directory"* ]]
}

@test "bytes pass through unchanged both ways" {
  require nbdcopy libnbd-bin
  random_file "$T/in" 16
  serve s mem:16M
  proxy p --connect "unix:$SOCK"
  nbdcopy "$T/in" "$PURI"
  nbdcopy "$PURI" "$T/out"
  cmp "$T/in" "$T/out"
  # The data really went through to the server, not just round the proxy.
  nbdcopy "$URI" "$T/direct"
  cmp "$T/in" "$T/direct"
  [ "$(counter c2s)" -gt 16777216 ]
  [ "$(counter s2c)" -gt 16777216 ]
  [ "$(counter current)" -eq 0 ]
}

@test "with --delay, many connections at once still pass bytes unchanged" {
  require nbdcopy libnbd-bin
  random_file "$T/in" 32
  serve s mem:32M
  proxy p --connect "unix:$SOCK" --delay 5ms
  nbdcopy --connections=4 "$T/in" "$PURI"
  nbdcopy --connections=4 "$PURI" "$T/out"
  cmp "$T/in" "$T/out"
  [ "$(counter accepted)" -ge 2 ]
}

@test "tcp: endpoints, both listening (port 0 shown by -v) and connecting" {
  require nbdinfo libnbd-bin
  serve s mem:3M
  # inner: tcp -> nbd-serve; outer: unix -> inner over tcp.
  "$NET_PROXY" -v --listen tcp:127.0.0.1:0 --connect "unix:$SOCK" 2>"$T/inner.log" &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q 'listening on' "$T/inner.log" && break; sleep 0.05; done
  port=$(sed -n 's/.*listening on tcp:127\.0\.0\.1:\([0-9]*\),.*/\1/p' "$T/inner.log")
  [[ $port =~ ^[1-9][0-9]*$ ]]
  run nbdinfo --size "nbd://127.0.0.1:$port"
  [ "$status" -eq 0 ]
  [ "$output" = 3145728 ]
  proxy outer --connect "tcp:127.0.0.1:$port"
  run nbdinfo --size "$PURI"
  [ "$status" -eq 0 ]
  [ "$output" = 3145728 ]
}

@test "a half-close is passed on: the server reads to EOF, then still answers" {
  require python3 python3
  # The server reads until EOF, then answers with what it counted; the
  # client shuts down its sending side and reads that answer.
  cat >"$T/peers.py" <<'EOF'
import os, socket, sys
if sys.argv[1] == "server":
    s = socket.socket(socket.AF_UNIX)
    s.bind(sys.argv[2]); s.listen(1)
    c, _ = s.accept()
    n = 0
    while True:
        b = c.recv(1 << 20)
        if not b: break
        n += len(b)
    c.sendall(b"got %d bytes\n" % n)
    c.close()
else:
    c = socket.socket(socket.AF_UNIX)
    c.connect(sys.argv[2])
    c.sendall(os.urandom(3 << 20))
    c.shutdown(socket.SHUT_WR)
    out = b""
    while True:
        b = c.recv(4096)
        if not b: break
        out += b
    sys.stdout.write(out.decode())
EOF
  python3 "$T/peers.py" server "$T/half.sock" &
  PIDS+=($!)
  wait_for_socket "$T/half.sock"
  proxy p --connect "unix:$T/half.sock" --delay 20ms
  run timeout 20 python3 "$T/peers.py" client "$PSOCK"
  [ "$status" -eq 0 ]
  [ "$output" = "got 3145728 bytes" ]
}

@test "cut closes a live connection at once, and stats counts it" {
  require nbdsh python3-libnbd
  serve s mem:1M
  proxy p --connect "unix:$SOCK"
  live_client
  [ "$(counter current)" -eq 1 ]
  run ctl cut
  [ "$status" -eq 0 ]
  [ "$output" = ok ]
  touch "$T/go"
  exits_within 10 "$CLIENT_PID" || true
  cat "$T/client.out"
  grep -qx read-failed "$T/client.out"
  [ "$(counter cut)" -eq 1 ]
  [ "$(counter current)" -eq 0 ]
  # Cutting is not going down: the next client gets through.
  run nbdinfo --size "$PURI"
  [ "$status" -eq 0 ]
  [ "$output" = 1048576 ]
  [ "$(counter cut)" -eq 1 ]
}

@test "down refuses new connections, up accepts them again" {
  require nbdinfo libnbd-bin
  serve s mem:1M
  proxy p --connect "unix:$SOCK"
  [ "$(ctl down)" = ok ]
  run timeout 20 nbdinfo --size "$PURI"
  [ "$status" -ne 0 ]
  [ "$(counter refused)" -eq 1 ]
  [ "$(counter accepted)" -eq 0 ]
  [ "$(ctl up)" = ok ]
  run nbdinfo --size "$PURI"
  [ "$status" -eq 0 ]
  [ "$output" = 1048576 ]
  [ "$(counter accepted)" -eq 1 ]
}

@test "down leaves the connections already made alone" {
  require nbdsh python3-libnbd
  serve s mem:1M
  proxy p --connect "unix:$SOCK"
  live_client
  [ "$(ctl down)" = ok ]
  touch "$T/go"
  exits_within 10 "$CLIENT_PID"
  grep -qx read-ok "$T/client.out"
}

@test "--cut-after cuts each connection once that many bytes went to the server" {
  require nbdcopy libnbd-bin
  random_file "$T/in" 8
  serve s mem:8M
  proxy p --connect "unix:$SOCK" --cut-after 1M
  run timeout 30 nbdcopy --connections=1 "$T/in" "$PURI"
  [ "$status" -ne 0 ]
  [ "$(counter cut)" -eq 1 ]
  [ "$(counter c2s)" -eq 1048576 ]
  # The server got less than the whole file.
  nbdcopy "$URI" "$T/out"
  ! cmp -s "$T/in" "$T/out"
}

@test "--delay adds at least twice the delay to a round trip" {
  require nbdinfo libnbd-bin
  serve s mem:1M
  proxy p --connect "unix:$SOCK" --delay 200ms
  # Connecting and asking the size is at least one round trip.
  ms=$(elapsed_ms nbdinfo --size "$PURI")
  echo "nbdinfo took $ms ms through a 200 ms proxy (should be >= 400)"
  [ "$ms" -ge 400 ]
}

@test "delay DURATION on the control socket changes the delay for new data" {
  require nbdinfo libnbd-bin
  serve s mem:1M
  proxy p --connect "unix:$SOCK"
  [ "$(ctl delay 300ms)" = ok ]
  ms=$(elapsed_ms nbdinfo --size "$PURI")
  echo "nbdinfo took $ms ms after 'delay 300ms' (should be >= 600)"
  [ "$ms" -ge 600 ]
  run ctl delay soon
  [ "$status" -eq 1 ]
  [[ "$output" == "error: duration 'soon'"* ]]
  run ctl delay
  [ "$status" -eq 1 ]
  [[ "$output" == "error: delay needs a DURATION"* ]]
}

@test "--send prints the answer; exit 0 on ok, 1 on error or no proxy" {
  serve s mem:1M
  proxy p --connect "unix:$SOCK"
  run "$NET_PROXY" --control "unix:$CTL" --send stats
  [ "$status" -eq 0 ]
  [[ "$output" =~ ^ok\ accepted=0\ current=0\ cut=0\ refused=0\ c2s=0\ s2c=0$ ]]
  run "$NET_PROXY" --control "unix:$CTL" --send 'cut now'
  [ "$status" -eq 1 ]
  [ "$output" = "error: cut takes no argument" ]
  run "$NET_PROXY" --control "unix:$CTL" --send frobnicate
  [ "$status" -eq 1 ]
  [[ "$output" == "error: unknown command 'frobnicate'"* ]]
  run "$NET_PROXY" --control "unix:$T/none.ctl" --send stats
  [ "$status" -eq 1 ]
  [[ "$output" == *"net-proxy: unable to send 'stats': connect to unix:$T/none.ctl"* ]]
}

@test "the control socket answers several commands on one connection, in order" {
  require python3 python3
  serve s mem:1M
  proxy p --connect "unix:$SOCK"
  # The last command has no newline: the end of the connection ends it.
  run python3 -c '
import socket, sys
c = socket.socket(socket.AF_UNIX)
c.connect(sys.argv[1])
c.sendall(b"down\nstats\n\nnonsense\nup\ndelay 1ms")
c.shutdown(socket.SHUT_WR)
out = b""
while True:
    b = c.recv(4096)
    if not b: break
    out += b
sys.stdout.write(out.decode())' "$CTL"
  [ "$status" -eq 0 ]
  echo "$output"
  [ "${#lines[@]}" -eq 5 ]
  [ "${lines[0]}" = ok ]
  [[ "${lines[1]}" == "ok accepted=0 "* ]]
  [[ "${lines[2]}" == "error: unknown command 'nonsense'"* ]]
  [ "${lines[3]}" = ok ]
  [ "${lines[4]}" = ok ]
}

@test "nothing on stdout or stderr without -v; -v logs connections and commands" {
  require nbdinfo libnbd-bin
  serve s mem:1M
  proxy quiet --connect "unix:$SOCK"
  nbdinfo --size "$PURI" >/dev/null
  ctl cut >/dev/null
  kill -TERM "$PROXY_PID"
  exits_within 10 "$PROXY_PID"
  [ ! -s "$T/quiet.out" ]
  [ ! -s "$T/quiet.log" ]
  proxy loud --connect "unix:$SOCK" -v
  nbdinfo --size "$PURI" >/dev/null
  ctl stats >/dev/null
  kill -TERM "$PROXY_PID"
  exits_within 10 "$PROXY_PID"
  [ ! -s "$T/loud.out" ]
  cat "$T/loud.log"
  grep -q 'connection 1: accepted' "$T/loud.log"
  grep -q 'connection 1: closed' "$T/loud.log"
  grep -q "control: 'stats': ok" "$T/loud.log"
}

@test "SIGTERM and SIGINT exit 0 promptly, live connections and all; sockets removed" {
  require nbdsh python3-libnbd
  serve s mem:1M
  for sig in TERM INT; do
    rm -f "$T/connected" "$T/go"
    proxy "p$sig" --connect "unix:$SOCK" --delay 50ms
    live_client
    kill -"$sig" "$PROXY_PID"
    exits_within 5 "$PROXY_PID"
    [ ! -e "$PSOCK" ]
    [ ! -e "$CTL" ]
    touch "$T/go"
    exits_within 10 "$CLIENT_PID" || true
    grep -qx read-failed "$T/client.out"
  done
}

@test "a server that refuses the connection: the client is closed, the proxy goes on" {
  require nbdinfo libnbd-bin
  proxy p --connect "unix:$T/nobody.sock"
  run timeout 20 nbdinfo --size "$PURI"
  [ "$status" -ne 0 ]
  [ "$(counter accepted)" -eq 1 ]
  [ "$(counter current)" -eq 0 ]
  kill -0 "$PROXY_PID"
}
