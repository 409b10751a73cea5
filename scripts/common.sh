# Shared settings and helpers for the service scripts. Source it; do not run it.
# Every port, folder and heap size can be overridden through the environment.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${IMFLOW_VENV:-$ROOT/.venv}"
VAR_DIR="${IMFLOW_VAR_DIR:-$ROOT/.var}"      # data, logs, pid files (git-ignored)
CACHE_DIR="${IMFLOW_CACHE_DIR:-$ROOT/.cache}" # downloaded jars (git-ignored)
RUN_DIR="$VAR_DIR/run"
LOG_DIR="$VAR_DIR/log"

KAFKA_VERSION="${IMFLOW_KAFKA_VERSION:-3.9.1}"
KAFKA_PORT="${IMFLOW_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${IMFLOW_KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP="${IMFLOW_KAFKA_HEAP:-512m}"

HBASE_VERSION="${IMFLOW_HBASE_VERSION:-2.6.3-hadoop3}"
HBASE_ZK_PORT="${IMFLOW_HBASE_ZK_PORT:-2181}"
HBASE_MASTER_PORT="${IMFLOW_HBASE_MASTER_PORT:-16000}"
HBASE_REGIONSERVER_PORT="${IMFLOW_HBASE_REGIONSERVER_PORT:-16020}"
HBASE_THRIFT_PORT="${IMFLOW_HBASE_THRIFT_PORT:-9090}"
HBASE_HEAP="${IMFLOW_HBASE_HEAP:-1g}"
HBASE_THRIFT_HEAP="${IMFLOW_HBASE_THRIFT_HEAP:-384m}"

REDIS_PORT="${IMFLOW_REDIS_PORT:-6379}"

SERVICE_TIMEOUT="${IMFLOW_SERVICE_TIMEOUT:-180}"   # seconds each readiness probe may take

mkdir -p "$RUN_DIR" "$LOG_DIR" "$CACHE_DIR"

log() { printf '[imflow %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# pid_alive NAME: true when the pid file of NAME names a live process.
pid_alive() {
  local f="$RUN_DIR/$1.pid"
  [[ -s "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

# stop_pid NAME: stop the process we started under NAME (TERM, then KILL after 30 s).
stop_pid() {
  local name="$1" f="$RUN_DIR/$1.pid" pid
  if ! pid_alive "$name"; then rm -f "$f"; return 0; fi
  pid="$(cat "$f")"
  log "stopping $name (pid $pid)"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || { rm -f "$f"; return 0; }; sleep 0.5; done
  log "$name did not stop in 30 s; killing"
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

# wait_ready NAME LOGFILE CMD...: run CMD until it succeeds or SERVICE_TIMEOUT passes;
# on timeout print the tail of LOGFILE and fail.
wait_ready() {
  local name="$1" logfile="$2"; shift 2
  local deadline=$((SECONDS + SERVICE_TIMEOUT))
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then log "$name ready"; return 0; fi
    if [[ -f "$RUN_DIR/$name.pid" ]] && ! pid_alive "$name"; then
      log "$name exited during start-up; last lines of $logfile:"
      tail -n 60 "$logfile" >&2 || true
      return 1
    fi
    sleep 1
  done
  log "$name not ready after ${SERVICE_TIMEOUT}s; last lines of $logfile:"
  tail -n 60 "$logfile" >&2 || true
  return 1
}

# probe KIND: the Python readiness probe (Kafka metadata, HBase tables(), Redis PING).
probe() { "$VENV/bin/python" "$ROOT/scripts/probe.py" "$@"; }

# fetch_jars NAME: resolve scripts/jars/NAME/pom.xml into $CACHE_DIR/jars/NAME once.
fetch_jars() {
  local name="$1" dest="$CACHE_DIR/jars/$1" pom="$ROOT/scripts/jars/$1/pom.xml"
  local stamp="$dest/.complete-$(sha1sum "$pom" | cut -c1-12)"
  [[ -f "$stamp" ]] && return 0
  log "resolving $name jars from Maven Central (first run only)"
  rm -rf "$dest"; mkdir -p "$dest"
  mvn -B -q -f "$pom" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$dest" "${@:2}" \
    || die "mvn could not resolve the $name jars"
  touch "$stamp"
}
