# servers.sh: nbd-serve processes in the kernel batches (smoke.sh,
# attach.sh), sourced by both; busybox sh. The caller sets LOG_DIR,
# NBD_SERVE and SERVERS (pids to kill on a failure) and defines fail().

# start_server NAME ARGS...: nbd-serve -v ARGS in the background, log in
# $LOG_DIR/NAME.log (appended: a restarted server keeps one log); sets PID.
start_server() {
  name=$1; shift
  : >>"$LOG_DIR/$name.log"   # exists before wait_ready looks, however late the child starts
  "$NBD_SERVE" -v "$@" 2>>"$LOG_DIR/$name.log" &
  PID=$!
  SERVERS="$SERVERS $PID"
}

# wait_ready NAME PID [BEFORE]: until the log says "serving" (written once
# it listens) BEFORE+1 times; BEFORE counts earlier runs of a restarted server.
wait_ready() {
  want=$((${3:-0} + 1))
  i=0
  while [ "$(grep -c '^nbd-serve: serving' "$LOG_DIR/$1.log")" -lt "$want" ]; do
    kill -0 "$2" 2>/dev/null || fail "nbd-serve ($1) exited at start: $(tail -n 5 "$LOG_DIR/$1.log")"
    i=$((i + 1)); [ $i -lt 100 ] || fail "nbd-serve ($1) not ready after 10 s"
    sleep 0.1
  done
}

# stop_server NAME PID: SIGTERM, wait up to 10 s, require exit status 0.
stop_server() {
  kill -TERM "$2"
  i=0
  while kill -0 "$2" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "nbd-serve ($1) still running 10 s after SIGTERM"
    sleep 0.1
  done
  rc=0; wait "$2" || rc=$?
  [ "$rc" -eq 0 ] || fail "nbd-serve ($1) exited $rc after SIGTERM (want 0)"
}
