#!/usr/bin/env bash
# setup-radguard-package.sh -- what scripts/test-package.sh needs (idempotent; instant when present).
#
#   * cargo-deb: builds the Debian package from [package.metadata.deb] (crates/radguard).
#   * cargo-cyclonedx: the CycloneDX SBOM written beside each package build.
#   * cargo-deny: `cargo deny check licenses bans sources` against deny.toml.
#   * systemd (systemd-analyze verify / security --offline) and dpkg/apt: Debian's own.
#
# Each tool is built with `cargo install --locked` (its own Cargo.lock: reproducible); the time
# each takes is printed.
#
# Usage:  bash scripts/setup-radguard-package.sh     (as root; safe to re-run)
set -euo pipefail

log() { printf '[setup-radguard-package] %s\n' "$*"; }

# Pinned: a new release of a tool must not change CI without a commit.
tools=(
  "cargo-deb 3.8.0 cargo-deb"
  "cargo-cyclonedx 0.5.9 cargo-cyclonedx"
  "cargo-deny 0.20.2 cargo-deny"
)
for t in "${tools[@]}"; do
  read -r crate version bin <<<"$t"
  if command -v "$bin" >/dev/null 2>&1 && cargo "${bin#cargo-}" --version 2>/dev/null | grep -q "$version"; then
    log "$crate $version present"
    continue
  fi
  start=$(date +%s)
  cargo install --locked --quiet "$crate" --version "$version"
  log "$crate $version installed in $(( $(date +%s) - start )) s"
done

need_apt=()
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v dpkg-deb >/dev/null 2>&1 || need_apt+=(dpkg)
if (( ${#need_apt[@]} )); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup-radguard-package.sh must run as root to install ${need_apt[*]}" >&2
    exit 1
  fi
  log "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
systemd-analyze --version | head -1
