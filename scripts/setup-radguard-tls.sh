#!/usr/bin/env bash
# setup-radguard-tls.sh -- what the radguard-tls tests need (idempotent; instant when present).
#
#   * Debian package `openssl` (OpenSSL 3): `openssl s_client` is the independent TLS client that
#     checks the profile (TLS 1.1, CBC and RSA-key-transport offers refused; TLS 1.2 AEAD and
#     TLS 1.3 accepted), and `openssl verify` / `openssl x509` check the quick-start PKI.
#   * `timeout` (coreutils) bounds each s_client run.
#
# Usage:  bash scripts/setup-radguard-tls.sh     (as root; safe to re-run)
set -euo pipefail

log() { printf '[setup-radguard-tls] %s\n' "$*"; }

if command -v openssl >/dev/null 2>&1 && openssl version | grep -q '^OpenSSL 3' \
   && command -v timeout >/dev/null 2>&1; then
  log "openssl $(openssl version | awk '{print $2}') and timeout present"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "setup-radguard-tls.sh must run as root to install the Debian package openssl" >&2
  exit 1
fi
log "installing openssl"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq openssl coreutils >/dev/null
openssl version
