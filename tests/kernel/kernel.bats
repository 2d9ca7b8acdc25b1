#!/usr/bin/env bats
# The kernel promise, as a bats test: nbd-serve and nbd-attach work with the
# real kernel NBD driver. Boots one VM (tests/vm/run-in-vm) through
# tests/kernel/run-smoke (quick: smoke.sh + attach.sh quick), which is what
# `make check` and `make kernel` run. This file lives outside the tests/*.bats
# glob on purpose, so `make check` boots the VM only once.
#   bats tests/kernel/kernel.bats        (after `make all build/tests/mmap-check`)

setup() {
  ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
}

@test "nbd-serve and nbd-attach work with the real kernel NBD driver (quick batches in a VM)" {
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
    "ok - no nbd errors in the kernel log" \
    "ok - nbd-attach: unix endpoint attached" \
    "ok - nbd-attach: --list shows" \
    "ok - nbd-attach: --detach /dev/nbd" \
    "ok - nbd-attach: spawn mode: printed" \
    "ok - nbd-attach: -C 4 --pidfile:" \
    "ok - nbd-attach: SIGTERM to pid" \
    "ok - nbd-attach: --foreground: stays in the job" \
    "ok - nbd-attach: max_sectors_kb is 1024" \
    "ok - nbd-attach: --read-only:" \
    "ok - nbd-attach: unknown socket: exit 1" \
    "ok - nbd-attach: -- false: exit 1" \
    "ok - nbd-attach: missing export name: exit 1" \
    "ok - nbd-attach: --device of a busy device: exit 1" \
    "ok - nbd-attach: quick batch: no nbd-attach or nbd-serve left" \
    "ok - nbd-attach: --detach of a --foreground spawn-mode device: nbd-attach exits 0"
  do
    [[ $output == *"$verdict"* ]] || { echo "missing verdict: $verdict"; return 1; }
  done
  [ "$(grep -cx 'ALL-OK' <<<"$output")" -eq 2 ]   # smoke.sh and attach.sh
}
