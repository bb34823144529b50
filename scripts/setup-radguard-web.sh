#!/usr/bin/env bash
# setup-radguard-web.sh -- what the console's server tests need (idempotent; instant when present).
#
#   * Debian package `prometheus` (2.x): `promtool check metrics` lints the /metrics text, and a
#     real `prometheus` started by tests/console.rs (its own config, port and data folder)
#     scrapes the console and is queried over its HTTP API. The package's own service is
#     stopped and disabled: the tests never use it (port 9090 stays free).
#
# Usage:  bash scripts/setup-radguard-web.sh     (as root; safe to re-run)
set -euo pipefail

log() { printf '[setup-radguard-web] %s\n' "$*"; }

stop_service() {
  # The package starts its service where an init system runs; the tests start their own.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  if command -v service >/dev/null 2>&1; then
    service prometheus stop >/dev/null 2>&1 || true
  fi
}

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  log "$(prometheus --version 2>&1 | head -1) present"
  stop_service
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "setup-radguard-web.sh must run as root to install the Debian package prometheus" >&2
  exit 1
fi
log "installing prometheus (promtool)"
export DEBIAN_FRONTEND=noninteractive
# No service start during the install (containers without an init system, and CI).
policy_rc=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy_rc ]]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy_rc"
  chmod +x "$policy_rc"
  created_policy=1
fi
trap '[[ $created_policy -eq 1 ]] && rm -f "$policy_rc"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
stop_service
prometheus --version 2>&1 | head -1
promtool --version 2>&1 | head -1
