# shellcheck shell=bash disable=SC2034  # sourced by the scripts/*.sh; variables used there
# Shared settings and helpers for the service scripts. Source it; do not run it.
# Every port, folder and heap size can be overridden through the environment.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${IMFLOW_VENV:-$ROOT/.venv}"
VAR_DIR="${IMFLOW_VAR_DIR:-$ROOT/.var}"      # data, logs, pid files (git-ignored)
CACHE_DIR="${IMFLOW_CACHE_DIR:-$ROOT/.cache}" # downloaded jars (git-ignored)
RUN_DIR="$VAR_DIR/run"
LOG_DIR="$VAR_DIR/log"

KAFKA_VERSION="${IMFLOW_KAFKA_VERSION:-3.9.2}"   # 3.9.1 is the fallback
KAFKA_PORT="${IMFLOW_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${IMFLOW_KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP="${IMFLOW_KAFKA_HEAP:-512m}"

HBASE_VERSION="${IMFLOW_HBASE_VERSION:-2.6.1-hadoop3}"   # newest 2.6 whose hbase-thrift resolves (see scripts/jars/hbase/pom.xml)
HBASE_ZK_PORT="${IMFLOW_HBASE_ZK_PORT:-2181}"
HBASE_MASTER_PORT="${IMFLOW_HBASE_MASTER_PORT:-16000}"
HBASE_REGIONSERVER_PORT="${IMFLOW_HBASE_REGIONSERVER_PORT:-16020}"
HBASE_THRIFT_PORT="${IMFLOW_HBASE_THRIFT_PORT:-9090}"
HBASE_HEAP="${IMFLOW_HBASE_HEAP:-1g}"
HBASE_THRIFT_HEAP="${IMFLOW_HBASE_THRIFT_HEAP:-384m}"

REDIS_PORT="${IMFLOW_REDIS_PORT:-6379}"

# IMFLOW_TOPOLOGY=cluster: a 3-node Kafka (KRaft, every node broker + controller), a Redis
# Cluster of 3 masters and 3 replicas and a pre-split history table, all on 127.0.0.1, on
# ports of their own (the single topology's can run beside them). Node n of Kafka listens
# on KAFKA_CLUSTER_PORT+n-1 (controller KAFKA_CLUSTER_CONTROLLER_PORT+n-1); Redis nodes on
# REDIS_CLUSTER_PORT..+5. HBase is the same standalone server in both topologies.
TOPOLOGY="${IMFLOW_TOPOLOGY:-single}"
[[ "$TOPOLOGY" == single || "$TOPOLOGY" == cluster ]] \
  || { echo "IMFLOW_TOPOLOGY must be single or cluster, not $TOPOLOGY" >&2; exit 2; }
KAFKA_NODES=3
KAFKA_CLUSTER_PORT="${IMFLOW_KAFKA_CLUSTER_PORT:-9191}"
KAFKA_CLUSTER_CONTROLLER_PORT="${IMFLOW_KAFKA_CLUSTER_CONTROLLER_PORT:-9291}"
REDIS_CLUSTER_PORT="${IMFLOW_REDIS_CLUSTER_PORT:-7000}"
REDIS_CLUSTER_NODES=6

SERVICE_TIMEOUT="${IMFLOW_SERVICE_TIMEOUT:-180}"   # seconds each readiness probe may take

mkdir -p "$RUN_DIR" "$LOG_DIR" "$CACHE_DIR"

log() { printf '[imflow %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# proc_alive PID: true when PID is a running process (a zombie waiting to be reaped by
# init counts as gone: some container inits reap only every few seconds).
proc_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local st
  st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 0
  [[ "$st" != Z && "$st" != X ]]
}

# pid_alive NAME: true when the pid file of NAME names a live process.
pid_alive() {
  local f="$RUN_DIR/$1.pid"
  [[ -s "$f" ]] && proc_alive "$(cat "$f")"
}

# stop_pid NAME: stop the process we started under NAME (TERM, then KILL after 30 s).
stop_pid() {
  local name="$1" f="$RUN_DIR/$1.pid" pid
  if ! pid_alive "$name"; then rm -f "$f"; return 0; fi
  pid="$(cat "$f")"
  log "stopping $name (pid $pid)"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do proc_alive "$pid" || { rm -f "$f"; return 0; }; sleep 0.1; done
  log "$name did not stop in 30 s; killing"
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

# forget_stale_pid NAME PATTERN: drop the pid file of NAME when its process is gone or its
# command line does not contain PATTERN (the pid was reused by something else), so that
# stop_pid never signals a process we did not start.
forget_stale_pid() {
  local f="$RUN_DIR/$1.pid" pid
  [[ -s "$f" ]] || { rm -f "$f"; return 0; }
  pid="$(cat "$f")"
  if ! proc_alive "$pid" \
      || ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2"; then
    rm -f "$f"
  fi
}

# port_in_use PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

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
    sleep 0.5
  done
  log "$name not ready after ${SERVICE_TIMEOUT}s; last lines of $logfile:"
  tail -n 60 "$logfile" >&2 || true
  return 1
}

# report_status NAME PATTERN PORT: print the state of the service NAME (its process command
# line matches PATTERN) and return 0 ready, 1 running but not ready, 3 stopped. Uses the
# calling script's `ready` function.
report_status() {
  local name="$1" pattern="$2" port="$3"
  forget_stale_pid "$name" "$pattern"
  if ! pid_alive "$name"; then echo "$name: stopped"; return 3; fi
  if ready; then
    echo "$name: running (pid $(cat "$RUN_DIR/$name.pid")), ready on 127.0.0.1:$port"
  else
    echo "$name: running (pid $(cat "$RUN_DIR/$name.pid")), NOT ready"; return 1
  fi
}

# probe KIND: the Python readiness probe (Kafka metadata, HBase tables(), Redis PING).
probe() { "$VENV/bin/python" "$ROOT/scripts/probe.py" "$@"; }

# fetch_jars NAME [MVN_ARGS...]: resolve scripts/jars/NAME/pom.xml into $CACHE_DIR/jars/NAME
# once. The pom reads its version from the property NAME.version, which is passed as
# -DNAME.version=$NAME_VERSION (KAFKA_VERSION, HBASE_VERSION) when that variable is set.
# The "complete" stamp is keyed on the pom, the version and the extra arguments, so a
# changed pom or version re-resolves; otherwise nothing runs (no mvn, no network).
fetch_jars() {
  local name="$1" dest="$CACHE_DIR/jars/$1" pom="$ROOT/scripts/jars/$1/pom.xml"
  shift
  [[ -f "$pom" ]] || die "no pom for $name: $pom"
  local var ver="" args=()
  var="$(printf '%s' "$name" | tr '[:lower:]-' '[:upper:]_')_VERSION"
  ver="${!var:-}"
  [[ -n "$ver" ]] && args+=("-D$name.version=$ver")
  args+=("$@")
  local key
  key="$( { cat "$pom"; printf '%s\n' "${args[@]}"; } | sha1sum | cut -c1-12)"
  local stamp="$dest/.complete-$key"
  [[ -f "$stamp" ]] && return 0
  command -v mvn >/dev/null || die "mvn not found (scripts/install.sh installs maven)"
  log "resolving $name jars${ver:+ $ver} from Maven Central (first run only)"
  local tmp="$dest.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  local mvnlog="$LOG_DIR/mvn-$name.log"
  local attempt ok=0
  for attempt in 1 2 3; do  # a download can break half-way (a `.part` file): try again
    if mvn -B -q -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" "${args[@]}" >"$mvnlog" 2>&1; then
      ok=1; break
    fi
    log "mvn attempt $attempt for the $name jars failed"
  done
  if ((!ok)); then
    tail -n 40 "$mvnlog" >&2 || true
    rm -rf "$tmp"
    die "mvn could not resolve the $name jars${ver:+ (version $ver)}; see $mvnlog"
  fi
  touch "$tmp/.complete-$key"
  rm -rf "$dest"; mv "$tmp" "$dest"
}
