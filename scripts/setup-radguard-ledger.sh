#!/usr/bin/env bash
# setup-radguard-ledger.sh -- what radguard-ledger needs beyond scripts/setup-test-env.sh
# (idempotent; Debian 12; run as root).
#
#   * openssl: bench/verify.sh compares verify's throughput with `openssl dgst -sha256`.
#   * g++: not for Radguard itself (its default build needs only Rust and a C compiler, and
#     JPEG-LS is decoded by radguard-jpegls, safe Rust; scripts/check-no-cxx.sh proves it), but
#     for the fuzz smoke in .ci/run: cargo-fuzz's libfuzzer-sys compiles libFuzzer (C++).
#
# The ledger tests also need DCMTK (dcmconv, dcmcrle, dcmcjpls, dcmcjpeg) and the project venv
# with pydicom and numpy: scripts/setup-test-env.sh installs those.
set -euo pipefail

PKGS=(g++ openssl)
log() { printf '[setup-radguard-ledger] %s\n' "$*"; }

if [[ $(id -u) -ne 0 ]]; then
  echo "setup-radguard-ledger.sh must run as root (apt-get)" >&2
  exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    </dev/null >/dev/null
else
  log "already installed: ${PKGS[*]}"
fi
for t in c++ openssl; do
  command -v "$t" >/dev/null || { log "ERROR: $t missing after install"; exit 1; }
done
log "$(c++ --version | head -1), $(openssl version)"
