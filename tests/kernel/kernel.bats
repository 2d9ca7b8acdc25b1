#!/usr/bin/env bats
# The kernel promise, as a bats test: nbd-serve works with the real kernel NBD
# driver. Boots a VM (tests/vm/run-in-vm) through tests/kernel/run-smoke, which
# is what `make check` and `make kernel` run. This file lives outside the
# tests/*.bats glob on purpose, so `make check` boots the VM only once.
#   bats tests/kernel/kernel.bats        (after `make all`)

setup() {
  ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
}

@test "nbd-serve serves the real kernel NBD driver (smoke batch in a VM)" {
  run "$ROOT/tests/kernel/run-smoke"
  echo "$output"            # bats shows it only when the test fails
  [ "$status" -eq 0 ]
  [[ $output != *"FAIL"* ]]
  for verdict in \
    "ok - nbd-serve created the 32 MiB backing file and listens on unix:/tmp/nbd.sock" \
    "ok - nbd0 attached over unix socket (netlink): 65536 sectors" \
    "ok - nbd0: 8 MiB written with O_DIRECT, caches dropped, read back identical" \
    "ok - backing file holds the pattern byte for byte, the rest still zero" \
    "ok - nbd1 attached over TCP 127.0.0.1 with 4 connections (netlink)" \
    "ok - nbd1: 8 MiB written in parallel with O_DIRECT, read back identical, backing file matches" \
    "ok - nbd1: blkdiscard of 1 MiB succeeds" \
    "ok - nbd2 attached to a --read-only export" \
    "ok - writes to nbd2 fail (direct and buffered) and the backing file is unchanged" \
    "ok - nbd0 detached with nbd-client -d: size 0, not connected" \
    "ok - nbd1 detached with nbd-client -d: size 0, not connected" \
    "ok - nbd2 detached with nbd-client -d: size 0, not connected" \
    "ok - nbd-serve (unix) exits 0 on SIGTERM after the client is gone" \
    "ok - nbd-serve (tcp) exits 0 on SIGTERM after the client is gone" \
    "ok - nbd-serve (ro) exits 0 on SIGTERM after the client is gone" \
    "ok - memsync's own attach: handshake + netlink CONNECT of" \
    "ok - nbd-serve (own) exits 0 on SIGTERM after the client is gone" \
    "ok - nbd-serve logged no warnings or errors" \
    "ok - no nbd errors in the kernel log"
  do
    [[ $output == *"$verdict"* ]] || { echo "missing verdict: $verdict"; return 1; }
  done
  grep -qx 'ALL-OK' <<<"$output"
}
