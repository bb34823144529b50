#!/usr/bin/env bash
# build-package.sh -- the Debian package of radguard and its SBOM, into target/debian/:
#
#   * builds the binary (profile PROFILE; dev: the one `cargo test --workspace` builds);
#   * generates its man pages and shell completions from the CLI definition
#     (`radguard man`, `radguard completions`) into target/PROFILE/pkg/;
#   * writes the CycloneDX SBOM of the build (cargo-cyclonedx) beside the package,
#     radguard_VERSION.cdx.json, and checks it names the gateway's main dependencies;
#   * builds radguard_VERSION-1_ARCH.deb (cargo-deb, [package.metadata.deb] of
#     crates/radguard/Cargo.toml) with that binary.
#
# Usage:  bash scripts/build-package.sh [PROFILE] [DEB_VERSION]
#   PROFILE: release (default; a package to ship: several minutes on 2 cores) or dev (the debug
#   binary `cargo test` builds: what CI's package test installs; cargo-deb warns about it).
#   The tools: scripts/setup-radguard-package.sh. Prints the package's path last.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
log() { printf '[build-package] %s\n' "$*" >&2; }
profile=${1:-release}
deb_version=${2:-}
case $profile in dev) outdir=target/debug ;; *) outdir=target/$profile ;; esac
t0=$(date +%s)

if [[ -n ${RADGUARD_PACKAGE_NO_BUILD:-} ]]; then
  # Packaging work: the binary already in target/PROFILE, whatever built it.
  [[ -x $outdir/radguard ]] || { log "no $outdir/radguard"; exit 1; }
  log "RADGUARD_PACKAGE_NO_BUILD: packaging $outdir/radguard as it is"
elif [[ $profile == dev ]]; then
  # The binary `cargo test --workspace` built and tested (its features are the workspace's,
  # dev-dependencies included; `cargo build -p radguard` would rebuild much of the tree with
  # others): a no-op after scripts/test.sh.
  log "cargo test --workspace --no-run (the tested debug binary)"
  cargo test --quiet --workspace --no-run
else
  log "cargo build -p radguard --profile $profile"
  cargo build --quiet -p radguard --bin radguard --profile "$profile"
fi
log "built in $(( $(date +%s) - t0 )) s"
bin=$outdir/radguard
pkg=$outdir/pkg
rm -rf "$pkg" && mkdir -p "$pkg/man" "$pkg/completions"
"$bin" man "$pkg/man" >/dev/null
gzip -9n "$pkg"/man/*.1   # Debian policy 12.1: man pages compressed
"$bin" completions bash >"$pkg/completions/radguard.bash"
"$bin" completions zsh >"$pkg/completions/_radguard"
"$bin" completions fish >"$pkg/completions/radguard.fish"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
mkdir -p target/debian
sbom=target/debian/radguard_${version}.cdx.json
cargo cyclonedx --manifest-path crates/radguard/Cargo.toml --format json \
  --override-filename radguard.cdx >/dev/null
mv crates/radguard/radguard.cdx.json "$sbom"
# cargo-cyclonedx writes one beside every workspace member: only the binary's is wanted.
rm -f crates/*/radguard.cdx.json
python3 - "$sbom" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["bomFormat"] == "CycloneDX", d.get("bomFormat")
names = {c["name"] for c in d.get("components", [])}
for need in ("radguard-gateway", "tokio", "rustls"):
    assert need in names, f"{need} missing from the SBOM"
print(f"[build-package] SBOM {sys.argv[1]}: CycloneDX {d['specVersion']}, {len(names)} components", file=sys.stderr)
PY

log "SBOM in $(( $(date +%s) - t0 )) s"
deb_args=(-p radguard --no-build --profile "$profile" --output target/debian/)
# A test package: gzip instead of xz (a minute less for the 40 MB debug binary).
[[ $profile == dev ]] && deb_args+=(--fast)
[[ -n $deb_version ]] && deb_args+=(--deb-version "$deb_version")
deb=$(cargo deb "${deb_args[@]}" 2>/dev/null | tail -1)
[[ -f $deb ]] || { log "cargo deb made no package"; exit 1; }
log "$deb ($(du -h "$deb" | cut -f1)) in $(( $(date +%s) - t0 )) s"
echo "$deb"
