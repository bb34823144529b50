#!/usr/bin/env bash
# setup-radguard-audit.sh -- what the radguard-audit tests need (idempotent, a few seconds when
# everything is already in place).
#
#   * Debian packages: postgresql (the server the PostgreSQL store tests write to), rsyslog and
#     rsyslog-gnutls (the syslog receiver the export tests start themselves, with TLS via gtls),
#     libxml2-utils (xmllint, validates the PS3.15 A.5 XML against the RELAX NG schema).
#   * A dedicated PostgreSQL cluster "radguard" listening on 127.0.0.1:55432 only, started, with
#     role `radguard` (password `radguard`) owning database `radguard_test`. The Debian default
#     cluster is left alone. Connection string for the tests (the default of RADGUARD_TEST_PG):
#       host=127.0.0.1 port=55432 user=radguard password=radguard dbname=radguard_test
#
# Usage:  bash scripts/setup-radguard-audit.sh     (as root; safe to re-run)
# Env:    SKIP_APT=1   skip apt-get (packages already installed)
#         PG_PORT=...  port of the test cluster (default 55432)
set -euo pipefail

PG_PORT="${PG_PORT:-55432}"
PG_CLUSTER=radguard
PG_USER=radguard
PG_PASS=radguard
PG_DB=radguard_test
APT_PKGS=(postgresql rsyslog rsyslog-gnutls libxml2-utils)

log() { printf '[setup-radguard-audit] %s\n' "$*"; }

if [[ $(id -u) -ne 0 ]]; then
  echo "setup-radguard-audit.sh must run as root (apt-get, PostgreSQL cluster as user postgres)" >&2
  exit 1
fi

# --------------------------------------------------------------------- apt
if [[ "${SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" </dev/null >/dev/null
  else
    log "apt packages already installed: ${APT_PKGS[*]}"
  fi
fi

for t in /usr/sbin/rsyslogd /usr/bin/xmllint /usr/bin/pg_createcluster /usr/bin/pg_ctlcluster; do
  [[ -x $t ]] || { log "ERROR: $t missing"; exit 1; }
done
[[ -f /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so || -n "$(find /usr/lib -name lmnsd_gtls.so 2>/dev/null | head -1)" ]] \
  || { log "ERROR: rsyslog's gtls driver (lmnsd_gtls.so, package rsyslog-gnutls) missing"; exit 1; }

# -------------------------------------------------------------- postgresql
PG_VER="$(ls /usr/lib/postgresql | sort -V | tail -1)"
[[ -n "$PG_VER" ]] || { log "ERROR: no PostgreSQL server under /usr/lib/postgresql"; exit 1; }

if ! pg_lsclusters -h | awk '{print $1"/"$2}' | grep -qx "${PG_VER}/${PG_CLUSTER}"; then
  log "creating PostgreSQL ${PG_VER} cluster '${PG_CLUSTER}' on 127.0.0.1:${PG_PORT}"
  pg_createcluster "$PG_VER" "$PG_CLUSTER" --port "$PG_PORT" >/dev/null
fi
# Loopback only; enough connections for parallel tests. Rewritten each run (cheap, idempotent).
CONF_D="/etc/postgresql/${PG_VER}/${PG_CLUSTER}/conf.d"
WANT_CONF="listen_addresses = '127.0.0.1'
port = ${PG_PORT}
max_connections = 200"
if [[ "$(cat "${CONF_D}/radguard-test.conf" 2>/dev/null)" != "$WANT_CONF" ]]; then
  mkdir -p "$CONF_D"
  printf '%s\n' "$WANT_CONF" >"${CONF_D}/radguard-test.conf"
  chown postgres:postgres "${CONF_D}/radguard-test.conf"
  pg_ctlcluster "$PG_VER" "$PG_CLUSTER" stop >/dev/null 2>&1 || true
fi

if ! pg_lsclusters -h | awk -v c="$PG_CLUSTER" -v v="$PG_VER" '$1==v && $2==c {print $4}' | grep -q online; then
  log "starting cluster ${PG_VER}/${PG_CLUSTER}"
  pg_ctlcluster "$PG_VER" "$PG_CLUSTER" start
fi
for _ in $(seq 1 60); do
  pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
  sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || { log "ERROR: PostgreSQL not ready on 127.0.0.1:${PG_PORT}"; exit 1; }

psql_su() { su postgres -c "psql -X -q -v ON_ERROR_STOP=1 -p ${PG_PORT} -tA $*"; }
if [[ "$(psql_su "-c \"SELECT 1 FROM pg_roles WHERE rolname='${PG_USER}'\"")" != 1 ]]; then
  log "creating role ${PG_USER}"
  psql_su "-c \"CREATE ROLE ${PG_USER} LOGIN PASSWORD '${PG_PASS}'\""
fi
if [[ "$(psql_su "-c \"SELECT 1 FROM pg_database WHERE datname='${PG_DB}'\"")" != 1 ]]; then
  log "creating database ${PG_DB}"
  psql_su "-c \"CREATE DATABASE ${PG_DB} OWNER ${PG_USER}\""
fi

CONN="host=127.0.0.1 port=${PG_PORT} user=${PG_USER} password=${PG_PASS} dbname=${PG_DB}"
PGPASSWORD="$PG_PASS" psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" -tAc 'SELECT 1' >/dev/null \
  || { log "ERROR: cannot log in as ${PG_USER} to ${PG_DB}"; exit 1; }

log "rsyslogd $(/usr/sbin/rsyslogd -v 2>/dev/null | head -1 | awk '{print $2}' | tr -d ,)"
log "PostgreSQL ${PG_VER} ready: RADGUARD_TEST_PG='${CONN}'"
log "done"
