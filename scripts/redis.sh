#!/usr/bin/env bash
# Our own Redis on 127.0.0.1:$REDIS_PORT (not the Debian service), AOF persistence.
#   scripts/redis.sh start|stop|status
# Data: $VAR_DIR/redis; log: $LOG_DIR/redis.log; pid: $RUN_DIR/redis.pid.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

REDIS_DIR="$VAR_DIR/redis"
REDIS_LOG="$LOG_DIR/redis.log"

ready() { port_in_use "$REDIS_PORT" && probe redis >/dev/null 2>&1; }

start() {
  forget_stale_pid redis redis-server
  if pid_alive redis; then
    if ready; then log "redis already running (pid $(cat "$RUN_DIR/redis.pid"))"; return 0; fi
    wait_ready redis "$REDIS_LOG" ready
    return
  fi
  port_in_use "$REDIS_PORT" \
    && die "port $REDIS_PORT is taken by a process this script did not start (the Debian redis-server service? try: service redis-server stop)"
  command -v redis-server >/dev/null || die "redis-server not found (run scripts/install.sh)"
  mkdir -p "$REDIS_DIR"
  log "starting redis on 127.0.0.1:$REDIS_PORT"
  # --save "": no RDB snapshots; durability comes from the AOF (fsync every second).
  redis-server \
    --port "$REDIS_PORT" --bind 127.0.0.1 --protected-mode yes \
    --dir "$REDIS_DIR" --appendonly yes --appendfsync everysec --save "" \
    --daemonize yes --pidfile "$RUN_DIR/redis.pid" --logfile "$REDIS_LOG" \
    || { tail -n 20 "$REDIS_LOG" >&2 || true; die "redis-server failed to start"; }
  for _ in $(seq 1 50); do [[ -s "$RUN_DIR/redis.pid" ]] && break; sleep 0.1; done
  wait_ready redis "$REDIS_LOG" ready
}

stop() {
  forget_stale_pid redis redis-server
  if pid_alive redis; then stop_pid redis; else log "redis not running"; fi
}

status() { report_status redis redis-server "$REDIS_PORT"; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
