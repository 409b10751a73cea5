#!/usr/bin/env bash
# Start, stop or check the local services: Redis, Kafka, HBase (real servers, 127.0.0.1).
#   scripts/services.sh start|stop|status [redis] [kafka] [hbase]
# Default: all of them; started in that order, stopped in reverse. `start` runs
# scripts/install.sh first unless IMFLOW_SKIP_INSTALL=1. HBase is handled only when
# scripts/hbase.sh exists. Prints how long each start took; exits non-zero on any failure.
# IMFLOW_TOPOLOGY=cluster: a 3-node Kafka and a 6-node Redis Cluster instead (see
# scripts/common.sh); HBase is the same standalone server.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ALL=(redis kafka hbase)
usage() { echo "usage: $0 start|stop|status [redis] [kafka] [hbase]" >&2; exit 2; }

cmd="${1:-}"; shift || true
[[ "$cmd" == start || "$cmd" == stop || "$cmd" == status ]] || usage

# selected services, always in start order
want=("$@"); ((${#want[@]})) || want=("${ALL[@]}")
for s in "${want[@]}"; do [[ " ${ALL[*]} " == *" $s "* ]] || usage; done
svcs=()
for s in "${ALL[@]}"; do
  [[ " ${want[*]} " == *" $s "* ]] || continue
  if [[ ! -f "$ROOT/scripts/$s.sh" ]]; then
    log "skipping $s: scripts/$s.sh does not exist"; continue
  fi
  svcs+=("$s")
done

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

rc=0
summary=()
case "$cmd" in
  start)
    if [[ "${IMFLOW_SKIP_INSTALL:-0}" != 1 ]]; then
      t0="$(now)"
      bash "$ROOT/scripts/install.sh" "${svcs[@]}" || die "scripts/install.sh failed"
      summary+=("install: $(secs "$t0" "$(now)") s")
    fi
    for s in "${svcs[@]}"; do
      if bash "$ROOT/scripts/$s.sh" status >/dev/null 2>&1; then
        summary+=("$s: already running (no-op)"); continue
      fi
      # cold = first start on an empty data folder ($VAR_DIR/NAME), warm = data reused
      kind=cold
      if [[ "$TOPOLOGY" == cluster && "$s" != hbase ]]; then
        compgen -G "$VAR_DIR/$s-[0-9]*" >/dev/null && kind=warm
      elif [[ -d "$VAR_DIR/$s" ]]; then kind=warm; fi
      t0="$(now)"
      if bash "$ROOT/scripts/$s.sh" start; then
        summary+=("$s: started ($kind) in $(secs "$t0" "$(now)") s")
      else
        summary+=("$s: FAILED to start after $(secs "$t0" "$(now)") s (logs in $LOG_DIR)"); rc=1
      fi
    done
    ;;
  stop)
    for ((i = ${#svcs[@]} - 1; i >= 0; i--)); do
      s="${svcs[i]}"
      t0="$(now)"
      if bash "$ROOT/scripts/$s.sh" stop; then
        summary+=("$s: stopped in $(secs "$t0" "$(now)") s")
      else
        summary+=("$s: FAILED to stop"); rc=1
      fi
    done
    ;;
  status)
    for s in "${svcs[@]}"; do
      bash "$ROOT/scripts/$s.sh" status || rc=1
    done
    ;;
esac

if ((${#summary[@]})); then
  printf '%s\n' "${summary[@]}"
fi
exit "$rc"
