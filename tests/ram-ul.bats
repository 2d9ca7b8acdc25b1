#!/usr/bin/env bats
# ram-ul: one @test per promise of man/ram-ul.1. ram-ul is judged through
# real clients: nbd-serve's remote: backend (the memsync wire client), with
# nbdinfo, nbdcopy and qemu-io on the NBD side.

load helpers/common

teardown() { ordered_teardown; }

RAM_UL=$BIN/ram-ul

setup() {
  common_setup
  export T
}

# psk PATH: a PSK file with one random key for identity alice, as
# make-certs writes it.
psk() { printf 'alice:%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$1"; }

# certs: C, the make-certs directory (a CA, a server certificate for
# localhost and 127.0.0.1, a client certificate). RSA keys take seconds to
# make, so one set serves the whole file.
certs() {
  require openssl openssl
  C=$BATS_FILE_TMPDIR/pki
  [[ -f $C/keys.psk ]] || "$ROOT/tests/helpers/make-certs" "$C"  # written last
}

# remote SOCK COMMAND: export ram-ul's store at SOCK as NBD for one command,
# which finds the export in $uri.
remote() { "$NBD_SERVE" "remote:unix:$1" --run "$2"; }

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

@test "--help prints the usage and exits 0" {
  run "$RAM_UL" --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"Usage: ram-ul [OPTIONS] [BACKEND]"* ]]
  [[ "$output" == *"default tcp:127.0.0.1:1337"* ]]
  [[ "$output" == *"(default 4G)"* ]]
  run "$RAM_UL" -h
  [ "$status" -eq 0 ]
  [[ "$output" == *"Usage: ram-ul"* ]]
}

@test "--version prints the version and exits 0" {
  run "$RAM_UL" --version
  [ "$status" -eq 0 ]
  [[ "$output" =~ ^ram-ul\ [0-9]+\.[0-9]+\.[0-9]+ ]]
  run "$RAM_UL" -V
  [ "$status" -eq 0 ]
  [[ "$output" =~ ^ram-ul\  ]]
}

@test "usage errors exit 2 with the reason and a pointer to --help" {
  run "$RAM_UL" --size 0
  [ "$status" -eq 2 ]
  [[ "$output" == *"ram-ul: usage: --size: must be more than 0"* ]]
  [[ "$output" == *"Try 'ram-ul --help'"* ]]
  run "$RAM_UL" --size 1X
  [ "$status" -eq 2 ]
  [[ "$output" == *"--size: size '1X' has an unknown unit"* ]]
  run "$RAM_UL" --size 1G mem:1G
  [ "$status" -eq 2 ]
  [[ "$output" == *"--size applies to the default memory backend; BACKEND has its own size"* ]]
  run "$RAM_UL" --max-payload 1K
  [ "$status" -eq 2 ]
  [[ "$output" == *"--max-payload: must be between 4K and 32M"* ]]
  run "$RAM_UL" --max-payload 64M
  [ "$status" -eq 2 ]
  [[ "$output" == *"--max-payload: must be between 4K and 32M"* ]]
  run "$RAM_UL" --threads 0
  [ "$status" -eq 2 ]
  [[ "$output" == *"--threads: must be between 1 and 1024"* ]]
  run "$RAM_UL" -t 1025
  [ "$status" -eq 2 ]
  [[ "$output" == *"--threads: must be between 1 and 1024"* ]]
  run "$RAM_UL" --max-connections 0
  [ "$status" -eq 2 ]
  [[ "$output" == *"--max-connections: must be at least 1"* ]]
  run "$RAM_UL" --bogus
  [ "$status" -eq 2 ]
  [[ "$output" == *"unrecognised option '--bogus'"* ]]
  run "$RAM_UL" mem:1M mem:2M
  [ "$status" -eq 2 ]
  run "$RAM_UL" --listen tcp:nohost
  [ "$status" -eq 2 ]
  [[ "$output" == *"endpoint 'tcp:nohost'"* ]]
  run "$RAM_UL" --listen -
  [ "$status" -eq 2 ]
}

@test "usage errors are found before anything is created or bound" {
  run "$RAM_UL" --listen "unix:$T/s.sock" --size 1M "file:$T/new.img?size=1M"
  [ "$status" -eq 2 ]
  [ ! -e "$T/new.img" ]
  [ ! -e "$T/s.sock" ]
  run "$RAM_UL" --listen "unix:$T/s.sock" --threads 0 "file:$T/new.img?size=1M"
  [ "$status" -eq 2 ]
  [ ! -e "$T/new.img" ]
  [ ! -e "$T/s.sock" ]
}

@test "--listen fd:N must be a listening socket" {
  # fd 0 is /dev/null here, not a socket: refused as a usage error.
  run "$RAM_UL" --listen fd:0 --size 1M </dev/null
  [ "$status" -eq 2 ]
  [[ "$output" == *"--listen: ram-ul needs a listening socket, not a connection"* ]]
  run "$RAM_UL" --listen fd:77 --size 1M
  [ "$status" -eq 2 ]
  [[ "$output" == *"--listen fd:77: no such descriptor"* ]]
}

@test "--listen fd:N serves an inherited listening socket" {
  require systemd-socket-activate systemd
  systemd-socket-activate -l "$T/a.sock" "$RAM_UL" --listen fd:3 --size 3M 2>"$T/a.log" &
  PIDS+=($!)
  wait_for_socket "$T/a.sock"
  run timeout -s KILL 20 "$NBD_SERVE" "remote:unix:$T/a.sock" --run 'nbdinfo --size "$uri"'
  [ "$status" -eq 0 ]
  [ "$output" = 3145728 ]
}

@test "a malformed backend spec is a usage error (exit 2) and nothing is created" {
  run "$RAM_UL" --listen "unix:$T/s.sock" mem:lots
  [ "$status" -eq 2 ]
  [[ "$output" == *"backend 'mem:lots': size 'lots'"* ]]
  run "$RAM_UL" --listen "unix:$T/s.sock" "dir:$T/d?size=1M&colour=red"
  [ "$status" -eq 2 ]
  [[ "$output" == *"unknown parameter 'colour'"* ]]
  [ ! -e "$T/d" ]
  run "$RAM_UL" --listen "unix:$T/s.sock" remote:nowhere
  [ "$status" -eq 2 ]
  [[ "$output" == *"expected remote:unix:PATH or remote:tcp:HOST:PORT"* ]]
  run "$RAM_UL" --listen "unix:$T/s.sock" tape:x
  [ "$status" -eq 2 ]
  [[ "$output" == *"not part of this build"* ]]
  [ ! -e "$T/s.sock" ]
}

@test "a backend that cannot be opened is a runtime error (exit 1) that names it" {
  run "$RAM_UL" --listen "unix:$T/s.sock" "$T/missing.img"
  [ "$status" -eq 1 ]
  [[ "$output" == *"ram-ul: unable to open the backend: open $T/missing.img: No such file or directory"* ]]
  run "$RAM_UL" --listen "unix:$T/s.sock" "file:$T/missing.img"
  [ "$status" -eq 1 ]
  [[ "$output" == *"(add ?size=SIZE to create it)"* ]]
  run "$RAM_UL" --listen "unix:$T/s.sock" "dir:$T/d"
  [ "$status" -eq 1 ]
  [[ "$output" == *"needs ?size=SIZE"* ]]
  [ ! -e "$T/s.sock" ]
}

@test "an endpoint that cannot be listened on is a runtime error (exit 1)" {
  run "$RAM_UL" --listen "unix:$T/nodir/s.sock" --size 1M
  [ "$status" -eq 1 ]
  [[ "$output" == *"ram-ul: unable to listen: "*"$T/nodir/s.sock"*"No such file or directory"* ]]
  # A live server on the socket is not replaced.
  ul live --size 1M
  run "$RAM_UL" --listen "unix:$WSOCK" --size 1M
  [ "$status" -eq 1 ]
  [[ "$output" == *"a server is already listening there"* ]]
  kill -0 "$UL_PID"
}

@test "a TCP port in use is a runtime error (exit 1); the first server goes on" {
  "$RAM_UL" --listen tcp:127.0.0.1:0 --size 2M -v 2>"$T/first.log" &
  first=$!
  PIDS+=("$first")
  for _ in $(seq 100); do grep -q 'offering' "$T/first.log" && break; sleep 0.05; done
  port=$(sed -n 's/.*offering .* on tcp:127\.0\.0\.1:\([0-9]*\).*/\1/p' "$T/first.log")
  [[ $port =~ ^[1-9][0-9]*$ ]]
  run "$RAM_UL" --listen "tcp:127.0.0.1:$port" --size 1M
  [ "$status" -eq 1 ]
  [[ "$output" == *"ram-ul: unable to listen: "*"tcp:127.0.0.1:$port"*"Address already in use"* ]]
  run "$NBD_SERVE" "remote:tcp:127.0.0.1:$port" --run 'nbdinfo --size "$uri"'
  [ "$status" -eq 0 ]
  [ "$output" = 2097152 ]
}

@test "defaults: mem: of 4G on tcp:127.0.0.1:1337, loopback only" {
  require ss iproute2
  if [[ -n $(ss -ltnH 'sport = :1337') ]]; then
    echo "port 1337 is already in use on this machine: cannot test the default" >&2
    false
  fi
  "$RAM_UL" -v 2>"$T/d.log" &
  PIDS+=($!)
  for _ in $(seq 100); do [[ -n $(ss -ltnH 'sport = :1337') ]] && break; sleep 0.05; done
  run ss -ltnH 'sport = :1337'
  echo "$output"
  [ "${#lines[@]}" -eq 1 ]
  [[ "${lines[0]}" == *" 127.0.0.1:1337 "* ]]
  grep -q 'offering mem:4G on tcp:127.0.0.1:1337' "$T/d.log"
  run "$NBD_SERVE" remote:tcp:127.0.0.1:1337 --run 'nbdinfo --size "$uri"'
  [ "$status" -eq 0 ]
  [ "$output" = 4294967296 ]
}

@test "socket activation replaces the default listener" {
  require systemd-socket-activate systemd
  systemd-socket-activate -l "$T/a.sock" "$RAM_UL" --size 5M -v 2>"$T/a.log" &
  PIDS+=($!)
  wait_for_socket "$T/a.sock"
  run timeout -s KILL 10 "$NBD_SERVE" "remote:unix:$T/a.sock" --run 'nbdinfo --size "$uri"'
  cat "$T/a.log"
  [ "$status" -eq 0 ]
  [ "$output" = 5242880 ]
}

@test "an explicit --listen wins over socket activation" {
  require systemd-socket-activate systemd
  systemd-socket-activate -l "$T/a.sock" "$RAM_UL" --listen "unix:$T/b.sock" --size 6M 2>"$T/a.log" &
  PIDS+=($!)
  wait_for_socket "$T/a.sock"
  # The activator starts ram-ul at the first connection; ram-ul then leaves
  # a.sock alone, so that client is never answered.
  run timeout -s KILL 2 "$NBD_SERVE" "remote:unix:$T/a.sock" --run true
  [ "$status" -ne 0 ]
  wait_for_socket "$T/b.sock"
  run remote "$T/b.sock" 'nbdinfo --size "$uri"'
  [ "$status" -eq 0 ]
  [ "$output" = 6291456 ]
}

@test "nbd-serve remote:unix: shows ram-ul's --size" {
  ul s --size 24M
  run remote "$WSOCK" 'nbdinfo --size "$uri"'
  [ "$status" -eq 0 ]
  [ "$output" = 25165824 ]
}

@test "8 MiB of random data in and out through nbd-serve remote:, byte for byte" {
  require nbdcopy libnbd-bin
  random_file "$T/in" 8
  ul s --size 8M
  remote "$WSOCK" 'nbdcopy "$T/in" "$uri" && nbdcopy "$uri" "$T/out"'
  cmp "$T/in" "$T/out"
}

@test "the data outlives the client: a second nbd-serve reads what the first wrote" {
  require nbdcopy libnbd-bin
  random_file "$T/in" 8
  ul s --size 8M
  remote "$WSOCK" 'nbdcopy "$T/in" "$uri"'
  remote "$WSOCK" 'nbdcopy "$uri" "$T/out"'
  cmp "$T/in" "$T/out"
}

@test "two clients at once write different regions; both read back" {
  require qemu-io qemu-utils
  random_file "$T/a" 4
  random_file "$T/b" 4
  ul s --size 16M -v
  remote "$WSOCK" 'qemu-io -f raw -c "write -s $T/a 0 4M" "$uri"' >"$T/ca.out" & a=$!
  remote "$WSOCK" 'qemu-io -f raw -c "write -s $T/b 8M 4M" "$uri"' >"$T/cb.out" & b=$!
  wait "$a"
  wait "$b"
  [ "$(grep -c 'new connection' "$T/s.log")" -ge 2 ]
  remote "$WSOCK" 'nbdcopy "$uri" "$T/out"'
  cmp -n 4194304 "$T/a" "$T/out"
  cmp -i 0:8388608 -n 4194304 "$T/b" "$T/out"
  cmp -i 4194304 -n 4194304 /dev/zero "$T/out"
  cmp -i 12582912 -n 4194304 /dev/zero "$T/out"
}

@test "--read-only on a file: writes through nbd-serve remote: fail, reads work" {
  require qemu-io qemu-utils
  random_file "$T/disk.img" 4
  cp "$T/disk.img" "$T/orig.img"
  ul s --read-only "$T/disk.img"
  run remote "$WSOCK" 'nbdinfo --is read-only "$uri"'
  [ "$status" -eq 0 ]
  run remote "$WSOCK" 'nbdcopy /dev/zero "$uri"'
  [ "$status" -ne 0 ]
  [[ "$output" == *"read-only"* ]]
  run remote "$WSOCK" 'qemu-io -f raw -c "write -P 0xab 0 64k" "$uri"'
  [ "$status" -ne 0 ]
  [[ "$output" == *"Permission denied"* ]]
  remote "$WSOCK" 'nbdcopy "$uri" "$T/out"'
  cmp "$T/orig.img" "$T/out"
  cmp "$T/orig.img" "$T/disk.img"
}

@test "--read-only on the default memory: writes through nbd-serve remote: fail" {
  require qemu-io qemu-utils
  ul s --read-only --size 4M
  run remote "$WSOCK" 'nbdinfo --is read-only "$uri"'
  [ "$status" -eq 0 ]
  run remote "$WSOCK" 'qemu-io -f raw -c "write -P 0xab 0 64k" "$uri"'
  [ "$status" -ne 0 ]
  run remote "$WSOCK" 'qemu-io -f raw -r -c "read -P 0 0 4M" "$uri"'
  [ "$status" -eq 0 ]
}

@test "LZ4 is offered by default and --no-compress turns it off; both round-trip" {
  require nbdcopy libnbd-bin
  # Compressible data (runs of zeros and of one byte) and random data.
  { head -c 2M /dev/zero; head -c 2M /dev/zero | tr '\0' 'x'; head -c 4M /dev/urandom; } >"$T/in"
  ul lz --size 8M -v
  remote "$WSOCK" 'nbdcopy "$T/in" "$uri" && nbdcopy "$uri" "$T/out1"'
  cmp "$T/in" "$T/out1"
  grep -q 'features 3' "$T/lz.log"  # LZ4 (bit 0) and TRIM (bit 1)
  ul raw --size 8M --no-compress -v
  remote "$WSOCK" 'nbdcopy "$T/in" "$uri" && nbdcopy "$uri" "$T/out2"'
  cmp "$T/in" "$T/out2"
  grep -q 'features 2' "$T/raw.log"  # TRIM only
}

@test "--max-payload is what the session negotiates; small payloads still round-trip" {
  require nbdcopy libnbd-bin
  random_file "$T/in" 2
  ul small --size 2M --max-payload 4K --threads 1 -v
  remote "$WSOCK" 'nbdcopy "$T/in" "$uri" && nbdcopy "$uri" "$T/out"'
  cmp "$T/in" "$T/out"
  grep -q 'max payload 4096,' "$T/small.log"
  # A cap, not a wish: the remote: client asks for the default, 4M.
  ul big --size 1M --max-payload 32M -v
  remote "$WSOCK" 'nbdinfo --size "$uri" >/dev/null'
  grep -q 'max payload 4194304,' "$T/big.log"
}

@test "--max-connections refuses clients over the limit and logs it" {
  ul s --size 1M --max-connections 1
  "$NBD_SERVE" "remote:unix:$WSOCK" --listen "unix:$T/n.sock" 2>"$T/n.log" &
  PIDS+=($!)
  wait_for_socket "$T/n.sock"
  run remote "$WSOCK" 'nbdinfo --size "$uri"'
  [ "$status" -ne 0 ]
  grep -q 'refusing a connection' "$T/s.log"
}

@test "-v logs the store, the address and sessions; without it ram-ul is quiet" {
  ul loud --size 1M -v
  remote "$WSOCK" 'nbdinfo --size "$uri" >/dev/null'
  grep -q "offering mem:1M on unix:$WSOCK" "$T/loud.log"
  grep -q 'new connection' "$T/loud.log"
  grep -q "wire session with 'memsync'" "$T/loud.log"
  ul quiet --size 1M
  remote "$WSOCK" 'nbdinfo --size "$uri" >/dev/null'
  kill -TERM "$UL_PID"
  exits_within 10 "$UL_PID"
  [ ! -s "$T/quiet.log" ]
}

@test "SIGTERM, SIGINT and SIGHUP stop ram-ul cleanly: exit 0, socket removed" {
  for sig in TERM INT HUP; do
    ul "sig$sig" --size 1M -v
    remote "$WSOCK" 'nbdinfo --size "$uri" >/dev/null'
    kill -"$sig" "$UL_PID"
    exits_within 10 "$UL_PID"
    [ ! -e "$WSOCK" ]
    grep -q 'caught .*, shutting down' "$T/sig$sig.log"
  done
}

@test "SIGTERM with a client connected: ram-ul exits 0 at once, the client sees the end" {
  ul s --size 1M
  "$NBD_SERVE" "remote:unix:$WSOCK" --listen "unix:$T/n.sock" 2>"$T/n.log" &
  nbd=$!
  PIDS+=("$nbd")
  wait_for_socket "$T/n.sock"
  kill -TERM "$UL_PID"
  exits_within 5 "$UL_PID"
  sleep 0.2
  grep -q 'connection lost' "$T/n.log"
  # Its server is gone for good: a SIGTERM would make nbd-serve wait out the
  # outage timeout (60 s) in its final sync.
  kill -KILL "$nbd"
  wait "$nbd" || true
}

@test "SIGTERM right after start is a clean stop (exit 0), never a kill" {
  for i in 1 2 3 4 5 6; do
    "$RAM_UL" --listen "unix:$T/r$i.sock" --size 1M &
    pid=$!
    sleep 0.0$i
    kill -TERM "$pid"
    exits_within 10 "$pid"
  done
}

@test "file: backend: data written through remote: lands in the file at its offset" {
  require qemu-io qemu-utils
  random_file "$T/in" 1
  ul s "file:$T/store.img?size=16M"
  [ "$(stat -c %s "$T/store.img")" -eq 16777216 ]
  remote "$WSOCK" 'qemu-io -f raw -c "write -s $T/in 5M 1M" "$uri"'
  kill -TERM "$UL_PID"
  exits_within 10 "$UL_PID"
  cmp -i 0:5242880 -n 1048576 "$T/in" "$T/store.img"
  cmp -n 5242880 /dev/zero "$T/store.img"
  cmp -i 6291456 -n 10485760 /dev/zero "$T/store.img"
}

@test "dir: backend: chunks become files" {
  require nbdcopy libnbd-bin
  random_file "$T/in" 1
  ul s "dir:$T/chunks?size=4M&chunk=64K"
  remote "$WSOCK" 'nbdcopy "$T/in" "$uri" && nbdcopy "$uri" "$T/out"'
  [ "$(ls "$T/chunks" | wc -l)" -eq 16 ]
  cmp -n 1048576 "$T/in" "$T/out"
  cmp -i 1048576 -n 3145728 /dev/zero "$T/out"
}

@test "--tls-psk: 8 MiB in and out through nbd-serve remote:?tls-psk=, byte for byte" {
  require nbdcopy libnbd-bin
  random_file "$T/in" 8
  PSK=$T/keys.psk
  psk "$PSK"
  ul s --size 8M --tls-psk "$PSK" -v
  remote "$WSOCK?tls-psk=$PSK" 'nbdcopy "$T/in" "$uri" && nbdcopy "$uri" "$T/out"'
  cmp "$T/in" "$T/out"
  grep -q "offering mem:8M on unix:$WSOCK (TLS)" "$T/s.log"
  grep -q "wire session with 'memsync'" "$T/s.log"
}

@test "--tls-psk: a wrong key or an unknown identity fails the client at once, exit 1" {
  PSK=$T/keys.psk
  psk "$PSK"
  ul s --size 1M --tls-psk "$PSK" -v
  psk "$T/wrong.psk"
  run timeout 30 "$NBD_SERVE" "remote:unix:$WSOCK?tls-psk=$T/wrong.psk" --run 'touch "$T/ran"'
  echo "$output"
  [ "$status" -eq 1 ]
  [[ "$output" == *"nbd-serve: unable to open the backend: connect to unix:$WSOCK (TLS): TLS handshake with the server"* ]]
  [ ! -e "$T/ran" ]
  sed 's/^alice:/bob:/' "$PSK" >"$T/bob.psk"
  run timeout 30 "$NBD_SERVE" "remote:unix:$WSOCK?tls-psk=$T/bob.psk" --run 'touch "$T/ran"'
  [ "$status" -eq 1 ]
  [[ "$output" == *"TLS handshake with the server"* ]]
  [ ! -e "$T/ran" ]
  grep -q "unknown PSK identity 'bob'" "$T/s.log"
  # The server goes on serving the right key.
  run timeout 30 "$NBD_SERVE" "remote:unix:$WSOCK?tls-psk=$PSK" --run 'nbdinfo --size "$uri"'
  [ "$status" -eq 0 ]
  [ "$output" = 1048576 ]
}

@test "with TLS on, ram-ul speaks nothing else: a plaintext client fails cleanly" {
  PSK=$T/keys.psk
  psk "$PSK"
  ul s --size 1M --tls-psk "$PSK" -v
  run timeout 30 "$NBD_SERVE" "remote:unix:$WSOCK" --run 'touch "$T/ran"'
  echo "$output"
  [ "$status" -eq 1 ]
  [[ "$output" == *"nbd-serve: unable to open the backend: connect to unix:$WSOCK: "* ]]
  [[ "$output" == *"this server speaks TLS only"* ]]
  [ ! -e "$T/ran" ]
  grep -q 'warning: connection ended: a client without TLS was refused' "$T/s.log"
  kill -0 "$UL_PID"
  # And the other way round: a TLS client to a plaintext ram-ul.
  ul plain --size 1M
  run timeout 30 "$NBD_SERVE" "remote:unix:$WSOCK?tls-psk=$PSK" --run 'touch "$T/ran"'
  [ "$status" -eq 1 ]
  [[ "$output" == *"TLS handshake with the server"* ]]
  [ ! -e "$T/ran" ]
}

@test "--tls-cert/--tls-key: clients verify the certificate against tls-ca= and its name" {
  certs
  ul s --size 1M --tls-cert "$C/server-cert.pem" --tls-key "$C/server-key.pem"
  run remote "$WSOCK?tls-ca=$C/ca-cert.pem" 'nbdinfo --size "$uri"'
  [ "$status" -eq 0 ]
  [ "$output" = 1048576 ]
  run remote "$WSOCK?tls-ca=$C/ca-cert.pem&tls-hostname=localhost" 'nbdinfo --size "$uri"'
  [ "$status" -eq 0 ]
  run timeout 30 "$NBD_SERVE" "remote:unix:$WSOCK?tls-ca=$C/ca-cert.pem&tls-hostname=wrong.example" --run true
  echo "$output"
  [ "$status" -eq 1 ]
  [[ "$output" == *"TLS handshake with the server"*"hostname mismatch"* ]]
  # Without tls-ca= the system's CAs are used, and they do not know ours.
  run timeout 30 "$NBD_SERVE" "remote:unix:$WSOCK?tls=yes" --run true
  [ "$status" -eq 1 ]
  [[ "$output" == *"certificate"* ]]
  # Over TCP the name checked by default is HOST: an IP address or a DNS name.
  "$RAM_UL" --listen tcp:127.0.0.1:0 --size 2M -v \
    --tls-cert "$C/server-cert.pem" --tls-key "$C/server-key.pem" 2>"$T/tcp.log" &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q 'offering' "$T/tcp.log" && break; sleep 0.05; done
  port=$(sed -n 's/.*offering .* on tcp:127\.0\.0\.1:\([0-9]*\) (TLS).*/\1/p' "$T/tcp.log")
  [[ $port =~ ^[1-9][0-9]*$ ]]
  for host in 127.0.0.1 localhost; do
    run timeout 30 "$NBD_SERVE" "remote:tcp:$host:$port?tls-ca=$C/ca-cert.pem" --run 'nbdinfo --size "$uri"'
    [ "$status" -eq 0 ]
    [ "$output" = 2097152 ]
  done
  run timeout 30 "$NBD_SERVE" "remote:tcp:127.0.0.1:$port?tls-ca=$C/ca-cert.pem&tls-hostname=wrong.example" --run true
  [ "$status" -eq 1 ]
  [[ "$output" == *"hostname mismatch"* ]]
}

@test "a client with a pre-shared key refuses a server that has only a certificate" {
  # The key must authenticate the server: a server that answers with any
  # certificate instead (an impostor without the key) must not be trusted.
  certs
  PSK=$T/keys.psk
  psk "$PSK"
  ul s --size 1M --tls-cert "$C/server-cert.pem" --tls-key "$C/server-key.pem"
  run timeout 30 "$NBD_SERVE" "remote:unix:$WSOCK?tls-psk=$PSK" --run 'touch "$T/ran"'
  echo "$output"
  [ "$status" -eq 1 ]
  [[ "$output" == *"did not prove the pre-shared key"* ]]
  [ ! -e "$T/ran" ]
}

@test "tls-verify=no turns TLS on (without checking the certificate)" {
  certs
  ul s --size 1M --tls-cert "$C/server-cert.pem" --tls-key "$C/server-key.pem"
  run remote "$WSOCK?tls-verify=no" 'nbdinfo --size "$uri"'
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$output" = 1048576 ]
}

@test "--tls-ca: only clients with a certificate signed by that CA are served" {
  certs
  ul s --size 1M --tls-cert "$C/server-cert.pem" --tls-key "$C/server-key.pem" --tls-ca "$C/ca-cert.pem" -v
  run timeout 30 "$NBD_SERVE" "remote:unix:$WSOCK?tls-ca=$C/ca-cert.pem" --run 'touch "$T/ran"'
  echo "$output"
  [ "$status" -eq 1 ]
  [[ "$output" == *"nbd-serve: unable to open the backend"* ]]
  [ ! -e "$T/ran" ]
  grep -q 'peer did not return a certificate' "$T/s.log"
  # A certificate of its own making is no better.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=mallory \
    -keyout "$T/self-key.pem" -out "$T/self-cert.pem" 2>/dev/null
  run timeout 30 "$NBD_SERVE" \
    "remote:unix:$WSOCK?tls-ca=$C/ca-cert.pem&tls-cert=$T/self-cert.pem&tls-key=$T/self-key.pem" --run 'touch "$T/ran"'
  [ "$status" -eq 1 ]
  [ ! -e "$T/ran" ]
  grep -q 'certificate verify failed' "$T/s.log"
  run remote "$WSOCK?tls-ca=$C/ca-cert.pem&tls-cert=$C/client-cert.pem&tls-key=$C/client-key.pem" \
    'nbdinfo --size "$uri"'
  [ "$status" -eq 0 ]
  [ "$output" = 1048576 ]
}

@test "TLS usage errors exit 2 before anything is read or bound" {
  # The files need not exist: the combination is checked first.
  run "$RAM_UL" --listen "unix:$T/s.sock" --size 1M --tls-cert "$T/none.pem"
  [ "$status" -eq 2 ]
  [[ "$output" == *"ram-ul: usage: --tls-cert and --tls-key go together"* ]]
  run "$RAM_UL" --listen "unix:$T/s.sock" --size 1M --tls-key "$T/none.pem"
  [ "$status" -eq 2 ]
  [[ "$output" == *"ram-ul: usage: --tls-cert and --tls-key go together"* ]]
  run "$RAM_UL" --listen "unix:$T/s.sock" --size 1M --tls-ca "$T/none.pem"
  [ "$status" -eq 2 ]
  [[ "$output" == *"ram-ul: usage: --tls-ca checks client certificates, which needs a server certificate"* ]]
  [[ "$output" == *"Try 'ram-ul --help'"* ]]
  # With a PSK but no certificate, it would serve nobody: refused too.
  run "$RAM_UL" --listen "unix:$T/s.sock" --size 1M --tls-ca "$T/none.pem" --tls-psk "$T/none.psk"
  [ "$status" -eq 2 ]
  [[ "$output" == *"--tls-ca checks client certificates"* ]]
  # Usage is settled before any file is read: a missing PSK file with a
  # bad endpoint is still a usage error.
  run "$RAM_UL" --listen "tcp:nohost" --size 1M --tls-psk "$T/none.psk"
  [ "$status" -eq 2 ]
  [ ! -e "$T/s.sock" ]
}

@test "TLS files that cannot be used are a runtime error (exit 1) naming the file" {
  run "$RAM_UL" --listen "unix:$T/s.sock" --size 1M --tls-psk "$T/missing.psk"
  [ "$status" -eq 1 ]
  [[ "$output" == *"ram-ul: unable to set up TLS: open PSK file $T/missing.psk: No such file or directory"* ]]
  printf 'alice:nothex\n' >"$T/bad.psk"
  run "$RAM_UL" --listen "unix:$T/s.sock" --size 1M --tls-psk "$T/bad.psk"
  [ "$status" -eq 1 ]
  [[ "$output" == *"ram-ul: unable to set up TLS: $T/bad.psk:1: "* ]]
  certs
  run "$RAM_UL" --listen "unix:$T/s.sock" --size 1M --tls-cert "$C/server-cert.pem" --tls-key "$C/client-key.pem"
  [ "$status" -eq 1 ]
  [[ "$output" == *"ram-ul: unable to set up TLS: "*"$C/client-key.pem"* ]]
  [ ! -e "$T/s.sock" ]
}

@test "remote: reconnects to a restarted ram-ul: a write after the restart lands in the file" {
  require nbdcopy libnbd-bin
  random_file "$T/in" 8
  ul s "file:$T/store.img?size=8M"
  serve n "remote:unix:$WSOCK" -v
  kill -KILL "$UL_PID"
  wait "$UL_PID" || true
  ul_again s2 "file:$T/store.img"
  run timeout 30 nbdcopy "$T/in" "$URI"
  echo "$output"
  [ "$status" -eq 0 ]
  cmp "$T/in" "$T/store.img"
  grep -q 'connection lost' "$T/n.log"
  grep -q 'reconnected' "$T/n.log"
  kill -TERM "$SERVER_PID"  # its final sync goes to the new server: exit 0
  exits_within 10 "$SERVER_PID"
}

@test "remote: sends unanswered writes again after ram-ul is killed mid-copy, over TLS too" {
  require nbdcopy libnbd-bin
  random_file "$T/in" 8
  PSK=$T/keys.psk
  psk "$PSK"
  ul s "file:$T/store.img?size=8M" --tls-psk "$PSK"
  serve n "remote:unix:$WSOCK?tls-psk=$PSK" -v
  # A stopped server takes requests off the wire into nothing: they are in
  # flight, unanswered, when it dies.
  kill -STOP "$UL_PID"
  timeout 30 nbdcopy "$T/in" "$URI" &
  copy=$!
  PIDS+=("$copy")
  sleep 0.5
  kill -0 "$copy"  # still waiting for its writes to be answered
  kill -KILL "$UL_PID"
  wait "$UL_PID" || true
  ul_again s2 "file:$T/store.img" --tls-psk "$PSK"
  wait "$copy"
  cmp "$T/in" "$T/store.img"
  grep -q 'reconnected' "$T/n.log"
  kill -TERM "$SERVER_PID"
  exits_within 10 "$SERVER_PID"
}

@test "a ram-ul with a memory store that restarts is noticed: reads fail (EIO), never zeros" {
  require nbdcopy libnbd-bin
  random_file "$T/in" 1
  ul s --size 1M
  serve n "remote:unix:$WSOCK"
  timeout 30 nbdcopy "$T/in" "$URI"
  kill -KILL "$UL_PID"
  wait "$UL_PID" || true
  ul_again s2 --size 1M  # same size, new (empty) memory, new store id
  run timeout 30 nbdcopy "$URI" "$T/out"
  echo "$output"
  [ "$status" -ne 0 ]
  [ "$status" -ne 124 ]  # failed, not stuck
  [[ "$output" == *"Input/output error"* ]]
  grep -q 'content is gone' "$T/n.log"
  # For good: writes fail too, and none reaches the new store.
  run timeout 30 nbdcopy "$T/in" "$URI"
  [ "$status" -ne 0 ]
  [ "$status" -ne 124 ]
  remote "$WSOCK" 'nbdcopy "$uri" "$T/fresh"'
  cmp -n 1048576 /dev/zero "$T/fresh"
}

@test "remote:?timeout=1s: with ram-ul gone for good, a read fails instead of waiting" {
  require nbdcopy libnbd-bin
  ul s --size 1M
  serve n "remote:unix:$WSOCK?timeout=1s"
  kill -TERM "$UL_PID"
  exits_within 10 "$UL_PID"
  run timeout 30 nbdcopy "$URI" "$T/out"
  echo "$output"
  [ "$status" -ne 0 ]
  [ "$status" -ne 124 ]  # failed on its own, not killed by timeout(1)
  grep -q 'no connection for' "$T/n.log"
}

@test "examples/remote-memory.sh runs to OK" {
  require nbdcopy libnbd-bin
  RAM_UL=$RAM_UL NBD_SERVE=$NBD_SERVE run "$ROOT/examples/remote-memory.sh"
  echo "$output"
  [ "$status" -eq 0 ]
  [ "${lines[-1]}" = OK ]
}

@test "bash completion offers options, endpoint schemes and backends" {
  source "$ROOT/completions/ram-ul"
  COMP_WORDS=(ram-ul --no); COMP_CWORD=1; unset COMP_LINE
  _ram_ul
  [ "${COMPREPLY[*]}" = --no-compress ]
  COMP_WORDS=(ram-ul --listen t); COMP_CWORD=2
  _ram_ul
  [ "${COMPREPLY[*]}" = tcp: ]
  COMP_WORDS=(ram-ul --size ""); COMP_CWORD=2
  _ram_ul
  [ "${#COMPREPLY[@]}" -eq 0 ]
  COMP_WORDS=(ram-ul fi); COMP_CWORD=1
  _ram_ul
  [[ " ${COMPREPLY[*]} " == *" file: "* ]]
  # The TLS options take file names.
  touch "$T/keys.psk" "$T/server-key.pem"
  for opt in --tls-cert --tls-key --tls-ca --tls-psk; do
    COMP_WORDS=(ram-ul "$opt" "$T/k"); COMP_CWORD=2
    _ram_ul
    [ "${COMPREPLY[*]}" = "$T/keys.psk" ]
  done
  COMP_WORDS=(ram-ul "--tls-key=$T/s"); COMP_CWORD=1
  _ram_ul
  [ "${COMPREPLY[*]}" = "--tls-key=$T/server-key.pem" ]
  # Under real completion only the part after the last ':' is replaced.
  COMP_LINE="ram-ul --listen=un"; COMP_POINT=${#COMP_LINE}
  _ram_ul
  [ "${COMPREPLY[*]}" = unix: ]
  unset COMP_LINE
  # Every option of --help is offered.
  COMP_WORDS=(ram-ul -); COMP_CWORD=1
  _ram_ul
  for opt in $("$RAM_UL" --help | grep -oE -- '(^|[ ,])--?[a-zA-Z][a-z-]*' | tr -d ' ,' | sort -u); do
    [[ " ${COMPREPLY[*]} " == *" $opt "* ]] || { echo "missing $opt"; false; }
  done
}
