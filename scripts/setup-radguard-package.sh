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

# Pinned: a new release of a tool must not change CI without a commit. The last field is the
# build profile: cargo-cyclonedx and cargo-deny read a small dependency graph and run for
# seconds either way, so they are built unoptimised (about half the compile time of a release
# build on 2 cores) in one shared target directory (their common dependencies built once);
# cargo-deb compresses a 100+ MB binary and stays optimised.
tools=(
  "cargo-deb 3.8.0 cargo-deb release"
  "cargo-cyclonedx 0.5.9 cargo-cyclonedx debug"
  "cargo-deny 0.20.2 cargo-deny debug"
)
TOOLS_TARGET=$(mktemp -d /tmp/radguard-cargo-tools.XXXXXX)
trap 'rm -rf "$TOOLS_TARGET"' EXIT
for t in "${tools[@]}"; do
  read -r crate version bin profile <<<"$t"
  if command -v "$bin" >/dev/null 2>&1 && cargo "${bin#cargo-}" --version 2>/dev/null | grep -q "$version"; then
    log "$crate $version present"
    continue
  fi
  start=$(date +%s)
  flags=(); [ "$profile" = debug ] && flags+=(--debug)
  CARGO_TARGET_DIR="$TOOLS_TARGET/$profile" cargo install --locked --quiet "${flags[@]}" "$crate" --version "$version"
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
