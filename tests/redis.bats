#!/usr/bin/env bats
# The redis: backend through nbd-serve, against a real redis-server on a
# unix socket in the test's directory, and third-party NBD clients.

load helpers/common

setup() {
  common_setup
  require redis-server redis-server
  require redis-cli redis-tools
  RSOCK=$T/redis.sock
  redis-server --port 0 --unixsocket "$RSOCK" --save '' --appendonly no --dir "$T" >"$T/redis.log" 2>&1 &
  PIDS+=($!)
  wait_for_socket "$RSOCK"
  for _ in $(seq 100); do redis-cli -s "$RSOCK" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
}

teardown() { common_teardown; }

@test "redis: 16 MiB in and out through nbd-serve, byte for byte, one key per written chunk" {
  require nbdcopy libnbd-bin
  random_file "$T/in" 16
  serve r "redis:unix:$RSOCK?size=16M&chunk=64K&prefix=t:"
  nbdcopy "$T/in" "$URI"
  nbdcopy "$URI" "$T/out"
  cmp "$T/in" "$T/out"
  [ "$(redis-cli -s "$RSOCK" dbsize)" = 256 ]
  [ "$(redis-cli -s "$RSOCK" strlen t:255)" = 65536 ]
}

@test "redis: the data outlives nbd-serve; a fresh store reads zeros and holds no keys" {
  require nbdcopy libnbd-bin
  serve a "redis:unix:$RSOCK?size=4M"
  nbdcopy "$URI" "$T/zeros"
  cmp "$T/zeros" <(head -c 4M /dev/zero)
  [ "$(redis-cli -s "$RSOCK" dbsize)" = 0 ]
  random_file "$T/in" 4
  nbdcopy --flush "$T/in" "$URI"
  kill "$SERVER_PID"
  wait "$SERVER_PID" || true
  serve b "redis:unix:$RSOCK?size=4M"
  nbdcopy "$URI" "$T/out"
  cmp "$T/in" "$T/out"
}

@test "redis: trim and zeroing delete keys; unaligned writes keep their neighbours" {
  require qemu-io qemu-utils
  serve r "redis:unix:$RSOCK?size=1M&chunk=4K"
  qemu-io -f raw -c 'write -P 0xab 0 1M' "$URI" >/dev/null
  [ "$(redis-cli -s "$RSOCK" dbsize)" = 256 ]
  qemu-io -f raw -c 'write -z 0 512K' -c 'discard 512K 256K' "$URI" >/dev/null
  [ "$(redis-cli -s "$RSOCK" dbsize)" = 64 ]
  qemu-io -f raw -c 'write -P 0xcd 1000 100' "$URI" >/dev/null
  run qemu-io -f raw -c 'read -P 0 0 1000' -c 'read -P 0xcd 1000 100' -c 'read -P 0 1100 3000' \
    -c 'read -P 0xab 786432 262144' "$URI"
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" != *"Pattern verification failed"* ]]
}

@test "redis: a key of the wrong length is an I/O error naming it, not a crash" {
  require qemu-io qemu-utils
  serve r "redis:unix:$RSOCK?size=1M&chunk=4K"
  redis-cli -s "$RSOCK" set memsync:3 short >/dev/null
  run qemu-io -f raw -c 'read 12288 4096' "$URI"
  echo "$output"
  [[ "$output" == *"Input/output error"* ]]
  grep -q "warning: READ at 12288 failed: .*key memsync:3 holds 5 bytes" "$T/r.log"  # the reason is logged
  kill -0 "$SERVER_PID"  # still serving
  run qemu-io -f raw -c 'read 0 4096' "$URI"
  [ "$status" -eq 0 ]
}

@test "redis: Redis gone: requests fail with an error, nbd-serve stays up and recovers on restart" {
  require qemu-io qemu-utils
  serve r "redis:unix:$RSOCK?size=1M"
  qemu-io -f raw -c 'write -P 0x11 0 64K' "$URI" >/dev/null
  redis-cli -s "$RSOCK" shutdown nosave >/dev/null 2>&1 || true
  run timeout 60 qemu-io -f raw -c 'read 0 4096' "$URI"
  echo "$output"
  [[ "$output" == *"error"* ]]
  kill -0 "$SERVER_PID"
  redis-server --port 0 --unixsocket "$RSOCK" --save '' --appendonly no --dir "$T" >>"$T/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do redis-cli -s "$RSOCK" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
  run timeout 60 qemu-io -f raw -c 'write -P 0x22 0 4096' -c 'read -P 0x22 0 4096' "$URI"
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" != *"error"* ]]
}

@test "redis: spec errors are usage errors (exit 2) naming the problem" {
  run "$NBD_SERVE" --listen "unix:$T/x.sock" "redis:unix:$RSOCK"
  [ "$status" -eq 2 ]
  [[ "$output" == *"?size=SIZE"* ]]
  run "$NBD_SERVE" --listen "unix:$T/x.sock" "redis:unix:$RSOCK?size=1M&chunk=1000"
  [ "$status" -eq 2 ]
  [[ "$output" == *"chunk"* ]]
  run "$NBD_SERVE" --listen "unix:$T/x.sock" "redis:unix:$RSOCK?size=1M&db=99"
  [ "$status" -eq 2 ]
  [[ "$output" == *"db"* ]]
  run "$NBD_SERVE" --listen "unix:$T/x.sock" "redis:unix:$T/nothing.sock?size=1M"
  [ "$status" -eq 1 ]
  [[ "$output" == *"redis unix:$T/nothing.sock"* ]]
  [ ! -e "$T/x.sock" ]
}
