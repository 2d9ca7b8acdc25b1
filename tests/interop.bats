#!/usr/bin/env bats
# nbd-serve with the NBD clients users already have: libnbd's nbdinfo and
# nbdcopy, qemu-img and qemu-io, fio's nbd engine, over plain sockets and
# TLS (X.509 certificates and PSK). The clients are the judges: data is
# compared byte for byte, or verified by the client (qemu-io -P, fio verify).

load helpers/common

setup() { common_setup; }
teardown() { common_teardown; }

pki() {
  [[ -d $T/pki ]] || "$ROOT/tests/helpers/make-certs" "$T/pki"
}

@test "nbdcopy: 64 MiB of random data round-trips byte for byte (file backend)" {
  require nbdcopy libnbd-bin
  random_file "$T/in" 64
  truncate -s 64M "$T/disk.img"
  serve s "$T/disk.img"
  nbdcopy --connections 4 "$T/in" "$URI"
  nbdcopy --connections 4 "$URI" "$T/out"
  cmp "$T/in" "$T/out"
  cmp "$T/in" "$T/disk.img"
}

@test "nbdcopy: sparse copy preserves holes through base:allocation" {
  require nbdcopy libnbd-bin
  truncate -s 32M "$T/sparse.img"
  dd if=/dev/urandom of="$T/sparse.img" bs=1M count=1 seek=8 conv=notrunc status=none
  serve s "$T/sparse.img"
  nbdcopy "$URI" "$T/copy.img"
  cmp "$T/sparse.img" "$T/copy.img"
  [ "$(du -k "$T/copy.img" | cut -f1)" -lt 8192 ]
}

@test "qemu-img: convert to and from the export, then compare" {
  require qemu-img qemu-utils
  random_file "$T/in" 16
  serve s mem:16M
  qemu-img convert -n -f raw -O raw "$T/in" "$URI"
  qemu-img compare -f raw -F raw "$T/in" "$URI"
  qemu-img convert -f raw -O qcow2 "$URI" "$T/out.qcow2"
  qemu-img compare -f raw -F qcow2 "$T/in" "$T/out.qcow2"
}

@test "qemu-io: pattern writes, zeroes and discards read back verified with -P" {
  require qemu-io qemu-utils
  serve s mem:16M
  run qemu-io -f raw \
    -c 'write -P 0x5a 0 1M' -c 'write -P 0xa5 1M 64k' -c 'write -P 0x11 3000 1000' \
    -c 'read -P 0x5a 0 3000' -c 'read -P 0x11 3000 1000' -c 'read -P 0x5a 4000 1044576' \
    -c 'read -P 0xa5 1M 64k' \
    -c 'write -z 2M 1M' -c 'read -P 0 2M 1M' \
    -c 'discard 4M 1M' -c 'read -P 0 4M 1M' -c 'flush' \
    "$URI"
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" != *"Pattern verification failed"* ]]
  [[ "$output" != *"failed"* ]]
}

@test "fio nbd engine: 4K random writes at iodepth 32 verified with crc32c" {
  require fio fio
  serve s mem:64M
  run fio --name=verify --ioengine=nbd --uri="$URI" --rw=randwrite --bs=4k --iodepth=32 \
    --size=32M --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --output-format=terse
  echo "$output"
  [ "$status" -eq 0 ]
}

@test "fio nbd engine: mixed block sizes on a file backend with FUA-free verify" {
  require fio fio
  truncate -s 64M "$T/disk.img"
  serve s "$T/disk.img"
  run fio --name=mixed --ioengine=nbd --uri="$URI" --rw=randrw --bsrange=512-256k --iodepth=16 \
    --size=32M --io_size=64M --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --output-format=terse
  echo "$output"
  [ "$status" -eq 0 ]
}

@test "TLS with certificates: nbdinfo and nbdcopy over nbds+unix, plaintext refused" {
  require nbdcopy libnbd-bin
  pki
  random_file "$T/in" 8
  serve s --tls require --tls-cert "$T/pki/server-cert.pem" --tls-key "$T/pki/server-key.pem" mem:8M
  local u="nbds+unix:///?socket=$SOCK&tls-certificates=$T/pki"
  run nbdinfo "$u"
  [ "$status" -eq 0 ]
  [[ "$output" == *"with TLS"* ]]
  nbdcopy "$T/in" "$u"
  nbdcopy "$u" "$T/out"
  cmp "$T/in" "$T/out"
  run nbdinfo --size "$URI"
  [ "$status" -ne 0 ]
}

@test "TLS with client certificates: a client without one is refused" {
  require nbdinfo libnbd-bin
  pki
  serve s --tls require --tls-cert "$T/pki/server-cert.pem" --tls-key "$T/pki/server-key.pem" \
    --tls-ca "$T/pki/ca-cert.pem" mem:1M
  run nbdinfo --size "nbds+unix:///?socket=$SOCK&tls-certificates=$T/pki"
  [ "$status" -eq 0 ]
  [ "$output" = 1048576 ]
  mkdir "$T/nocert"
  cp "$T/pki/ca-cert.pem" "$T/nocert/"
  run nbdinfo --size "nbds+unix:///?socket=$SOCK&tls-certificates=$T/nocert"
  [ "$status" -ne 0 ]
  grep -q 'connection ended: TLS handshake' "$T/s.log"
}

@test "TLS with PSK: nbdinfo with the right identity works, a wrong key is refused" {
  require nbdinfo libnbd-bin
  pki
  serve s --tls require --tls-psk "$T/pki/keys.psk" mem:2M
  run nbdinfo --size "nbds+unix://alice@/?socket=$SOCK&tls-psk-file=$T/pki/keys.psk"
  [ "$status" -eq 0 ]
  [ "$output" = 2097152 ]
  echo "alice:$(openssl rand -hex 32)" >"$T/wrong.psk"
  run nbdinfo --size "nbds+unix://alice@/?socket=$SOCK&tls-psk-file=$T/wrong.psk"
  [ "$status" -ne 0 ]
}

@test "TLS: qemu-img with tls-creds-x509 and tls-creds-psk objects" {
  require qemu-img qemu-utils
  pki
  "$NBD_SERVE" --listen tcp::0 --tls on --tls-cert "$T/pki/server-cert.pem" --tls-key "$T/pki/server-key.pem" \
    --run 'qemu-img info --object tls-creds-x509,id=t0,dir='"$T/pki"',endpoint=client \
      --image-opts driver=nbd,host=localhost,port=$port,tls-creds=t0' mem:5M >"$T/x509.out" 2>&1
  grep -q 'virtual size: 5 MiB' "$T/x509.out"
  "$NBD_SERVE" --listen tcp:127.0.0.1:0 --tls require --tls-psk "$T/pki/keys.psk" \
    --run 'qemu-img info --object tls-creds-psk,id=t0,dir='"$T/pki"',endpoint=client,username=alice \
      --image-opts driver=nbd,host=127.0.0.1,port=$port,tls-creds=t0' mem:6M >"$T/psk.out" 2>&1
  grep -q 'virtual size: 6 MiB' "$T/psk.out"
}

@test "TLS under load: fio at iodepth 32 with verify through the TLS relay" {
  require fio fio
  pki
  serve s --tls require --tls-cert "$T/pki/server-cert.pem" --tls-key "$T/pki/server-key.pem" mem:32M
  # fio's engine refuses file paths in URIs: libnbd then looks in $HOME/.pki/libnbd.
  mkdir -p "$T/home/.pki"
  ln -s "$T/pki" "$T/home/.pki/libnbd"
  HOME=$T/home run fio --name=tls --ioengine=nbd --uri="nbds+unix:///?socket=$SOCK" \
    --rw=randwrite --bs=4k --iodepth=32 --size=16M --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
    --output-format=terse
  echo "$output"
  [ "$status" -eq 0 ]
}
