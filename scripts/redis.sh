#!/usr/bin/env bash
# Our own Redis on 127.0.0.1 (not the Debian service), AOF persistence.
#   scripts/redis.sh start|stop|status
# IMFLOW_TOPOLOGY=single (default): one server on $REDIS_PORT; data $VAR_DIR/redis, log
#   $LOG_DIR/redis.log, pid $RUN_DIR/redis.pid.
# IMFLOW_TOPOLOGY=cluster: a Redis Cluster of 3 masters and 3 replicas on
#   $REDIS_CLUSTER_PORT..+5, each with $VAR_DIR/redis-PORT, $LOG_DIR/redis-PORT.log and
#   $RUN_DIR/redis-PORT.pid; the cluster is created once (`redis-cli --cluster create`).
#   `start` starts the nodes that are not running (a node a test killed rejoins as it was:
#   its nodes.conf keeps its identity, its AOF its data).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [[ "$TOPOLOGY" == cluster ]]; then
  PORTS=()
  for ((i = 0; i < REDIS_CLUSTER_NODES; i++)); do PORTS+=($((REDIS_CLUSTER_PORT + i))); done
else
  PORTS=("$REDIS_PORT")
fi

# node PORT: sets NAME, REDIS_DIR, REDIS_LOG for the server on PORT.
node() {
  if [[ "$TOPOLOGY" == cluster ]]; then NAME="redis-$1"; else NAME=redis; fi
  REDIS_DIR="$VAR_DIR/$NAME"
  REDIS_LOG="$LOG_DIR/$NAME.log"
}

ready_port() { port_in_use "$1" && probe redis "$1" >/dev/null 2>&1; }

launch() {
  local port="$1"
  node "$port"
  forget_stale_pid "$NAME" redis-server
  if pid_alive "$NAME"; then log "$NAME already running (pid $(cat "$RUN_DIR/$NAME.pid"))"; return 0; fi
  port_in_use "$port" \
    && die "port $port is taken by a process this script did not start (the Debian redis-server service? try: service redis-server stop)"
  mkdir -p "$REDIS_DIR"
  local -a cluster=()
  if [[ "$TOPOLOGY" == cluster ]]; then
    # a failed master is replaced by its replica after 3 s; the other shards keep
    # serving meanwhile (full coverage not required)
    cluster=(--cluster-enabled yes --cluster-config-file nodes.conf
             --cluster-node-timeout 3000 --cluster-require-full-coverage no)
  fi
  log "starting $NAME on 127.0.0.1:$port"
  # --save "": no RDB snapshots; durability comes from the AOF (fsync every second).
  redis-server \
    --port "$port" --bind 127.0.0.1 --protected-mode yes \
    --dir "$REDIS_DIR" --appendonly yes --appendfsync everysec --save "" \
    "${cluster[@]}" \
    --daemonize yes --pidfile "$RUN_DIR/$NAME.pid" --logfile "$REDIS_LOG" \
    || { tail -n 20 "$REDIS_LOG" >&2 || true; die "redis-server failed to start on $port"; }
  for _ in $(seq 1 50); do [[ -s "$RUN_DIR/$NAME.pid" ]] && break; sleep 0.1; done
}

# The cluster is created once, when no node knows of any other yet.
create_cluster() {
  local known
  known="$(redis-cli -p "${PORTS[0]}" cluster info | tr -d '\r' | awk -F: '$1 == "cluster_known_nodes" {print $2}')"
  [[ "$known" == 1 ]] || return 0
  local -a addrs=()
  local p
  for p in "${PORTS[@]}"; do addrs+=("127.0.0.1:$p"); done
  log "creating the Redis Cluster (3 masters, 3 replicas): ${addrs[*]}"
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
    >>"$LOG_DIR/redis-cluster-create.log" 2>&1 \
    || { tail -n 20 "$LOG_DIR/redis-cluster-create.log" >&2; die "redis-cli --cluster create failed"; }
}

start() {
  command -v redis-server >/dev/null || die "redis-server not found (run scripts/install.sh)"
  local port
  for port in "${PORTS[@]}"; do launch "$port"; done
  if [[ "$TOPOLOGY" == cluster ]]; then
    for port in "${PORTS[@]}"; do
      node "$port"; wait_ready "$NAME" "$REDIS_LOG" port_in_use "$port" || return 1
    done
    create_cluster
  fi
  for port in "${PORTS[@]}"; do
    node "$port"; wait_ready "$NAME" "$REDIS_LOG" ready_port "$port" || return 1
  done
}

stop() {
  local port
  for port in "${PORTS[@]}"; do
    node "$port"
    forget_stale_pid "$NAME" redis-server
    if pid_alive "$NAME"; then stop_pid "$NAME"; else log "$NAME not running"; fi
  done
}

status() {
  local port rc=0
  for port in "${PORTS[@]}"; do
    node "$port"
    ready() { ready_port "$port"; }
    report_status "$NAME" redis-server "$port" || rc=$?
  done
  return "$rc"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
