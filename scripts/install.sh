#!/usr/bin/env bash
# Install what the services and the app need; idempotent, and quick when nothing changed.
#   - Debian packages: redis-server, wrk, chromium, chromium-driver (plus a JRE, maven,
#     python3-venv only if missing)
#   - the virtualenv $VENV with `pip install -e ".[dev]"` (stamp keyed on pyproject.toml)
#   - the Kafka jars (and the HBase jars when scripts/jars/hbase/pom.xml exists) via mvn
#   scripts/install.sh [redis] [kafka] [hbase]   (default: all; the names only select jars)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

want=" ${*:-redis kafka hbase} "

# ---- Debian packages --------------------------------------------------------------------
SUDO=()
if [[ $EUID -ne 0 ]]; then
  command -v sudo >/dev/null && SUDO=(sudo) || SUDO=(false-no-root)
fi
as_root() {
  [[ "${SUDO[0]:-}" == false-no-root ]] && die "need root (or sudo) to run: $*"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive "$@"
}

pkgs=()
dpkg -s redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
command -v java >/dev/null || pkgs+=(default-jre-headless)
command -v mvn >/dev/null || pkgs+=(maven)
command -v wrk >/dev/null || pkgs+=(wrk)  # the HTTP load generator of `make bench`
# headless browser of tests/browser (Playwright drives /usr/bin/chromium; no browser download)
dpkg -s chromium >/dev/null 2>&1 || pkgs+=(chromium)
dpkg -s chromium-driver >/dev/null 2>&1 || pkgs+=(chromium-driver)
if [[ ! -x "$VENV/bin/python" ]] && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  pkgs+=(python3-venv)
fi

if ((${#pkgs[@]})); then
  # Remember whether something already served the Redis port, so that we only stop a
  # Debian redis-server service that this install started.
  redis_port_was_busy=0
  port_in_use "$REDIS_PORT" && redis_port_was_busy=1
  redis_was_installed=0
  dpkg -s redis-server >/dev/null 2>&1 && redis_was_installed=1

  need_update=0
  for p in "${pkgs[@]}"; do
    cand="$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    [[ -z "$cand" || "$cand" == "(none)" ]] && need_update=1
  done
  if ((need_update)); then
    log "apt-get update"
    as_root apt-get update -q
  fi
  log "apt-get install ${pkgs[*]}"
  if ! as_root apt-get install -y -q --no-install-recommends "${pkgs[@]}"; then
    # a stale package index gives 404s: refresh it once and retry
    log "apt-get install failed; refreshing the package index and retrying"
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends "${pkgs[@]}"
  fi

  if ((!redis_was_installed && !redis_port_was_busy)) && dpkg -s redis-server >/dev/null 2>&1; then
    # The package may start (and enable) its own service on port 6379; we run our own
    # redis-server (scripts/redis.sh), so stop and disable the one the install started.
    if port_in_use "$REDIS_PORT"; then
      log "stopping the redis-server service started by the package install"
      as_root service redis-server stop || true
    fi
    if [[ -d /run/systemd/system ]]; then
      as_root systemctl disable redis-server >/dev/null 2>&1 || true
    elif command -v update-rc.d >/dev/null; then
      as_root update-rc.d redis-server disable >/dev/null 2>&1 || true
    fi
    for _ in $(seq 1 20); do port_in_use "$REDIS_PORT" || break; sleep 0.5; done
    port_in_use "$REDIS_PORT" && log "WARNING: port $REDIS_PORT is still in use after stopping the service"
  fi
fi

# ---- virtualenv -------------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating the virtualenv $VENV"
  python3 -m venv "$VENV"
fi
venv_stamp="$VENV/.imflow-install-$(cat "$ROOT/pyproject.toml" | sha1sum | cut -c1-12)"
if [[ ! -f "$venv_stamp" ]]; then
  log "pip install -e \"${ROOT}[dev]\""
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "${ROOT}[dev]"
  rm -f "$VENV"/.imflow-install-*
  touch "$venv_stamp"
fi

# ---- jars -------------------------------------------------------------------------------
if [[ "$want" == *" kafka "* ]]; then
  fetch_jars kafka
fi
if [[ "$want" == *" hbase "* && -f "$ROOT/scripts/jars/hbase/pom.xml" ]]; then
  fetch_jars hbase
fi
log "install: done"
