#!/usr/bin/env bash
# test-package.sh -- the Debian package, its SBOM and its unit, built and tried for real:
#
#   1. scripts/build-package.sh: the binary, man pages and shell completions from its CLI
#      definition, a CycloneDX SBOM (cargo-cyclonedx), the .deb (cargo-deb) in target/debian/;
#   2. installs it (apt-get), checks the system user, the data folder, the conffile, the unit
#      (systemd-analyze verify; security --offline exposure <= 2.0), `radguard --version`,
#      `radguard config check /etc/radguard/radguard.toml`, and runs the gateway once as the
#      service user on its data folder (no systemd runs here: not through systemctl);
#   3. upgrades it (same binary, a higher package version): the edited conffile and the data
#      are kept;
#   4. removes it (data and config kept), then purges it (data still kept).
#
# Profile: RADGUARD_PACKAGE_PROFILE (default `dev`: the debug binary `cargo test --workspace`
# already built and tested, so the package costs seconds after scripts/test.sh; cargo-deb warns
# that dev is not for releases). A package to ship: RADGUARD_PACKAGE_PROFILE=release (a release
# build: several minutes on 2 cores).
#
# Needs root, dpkg/apt and the tools of scripts/setup-radguard-package.sh. Refuses to run where
# a radguard package or data folder it did not create exists (it would remove them).
#
# Usage:  bash scripts/test-package.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

log() { printf '[test-package] %s\n' "$*"; }
fail() { printf '[test-package] FAIL: %s\n' "$*" >&2; exit 1; }
t0=$(date +%s)
step() { log "$(( $(date +%s) - t0 )) s: $*"; }

[[ $(id -u) -eq 0 ]] || fail "must run as root (installs the package)"
data=/var/lib/radguard
marker=$data/.radguard-package-test
if [[ -d $data && ! -e $marker ]]; then
  fail "$data exists and was not made by this test: not touching it"
fi
if dpkg-query -W -f='${Status}' radguard 2>/dev/null | grep -q "installed" && [[ ! -e $marker ]]; then
  fail "a radguard package is installed and was not made by this test: not touching it"
fi
# A previous run's leftovers.
dpkg --purge radguard >/dev/null 2>&1 || true
rm -rf "$data"

profile=${RADGUARD_PACKAGE_PROFILE:-dev}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
# What `--version` must name: build.rs reads the checkout (RADGUARD_COMMIT, when set, wins).
commit=${RADGUARD_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
sbom=target/debian/radguard_${version}.cdx.json

step "build (scripts/build-package.sh $profile)"
deb=$(bash scripts/build-package.sh "$profile")
# cargo-deb replaces the package's other versions in its output folder: keep this one aside.
mkdir -p target/debian/test
mv "$deb" target/debian/test/ && deb=target/debian/test/${deb##*/}
# The same binary as a later version: the upgrade below.
deb2=$(bash scripts/build-package.sh "$profile" "${version}-2")
log "built $deb and $deb2 ($(du -h "$deb" | cut -f1))"
dpkg-deb --contents "$deb" | awk '{print $6}' | sort >target/debian/contents.txt
for f in ./usr/bin/radguard ./etc/radguard/radguard.toml ./usr/share/man/man1/radguard.1.gz \
         ./usr/share/man/man1/radguard-serve.1.gz ./usr/lib/systemd/system/radguard.service \
         ./usr/share/bash-completion/completions/radguard ./usr/share/zsh/vendor-completions/_radguard \
         ./usr/share/fish/vendor_completions.d/radguard.fish ./usr/share/doc/radguard/config.md; do
  grep -qxF "$f" target/debian/contents.txt || fail "$f is not in the package"
done
dpkg-deb --info "$deb" conffiles | grep -qx /etc/radguard/radguard.toml || fail "no conffile"

step "install"
apt-get install -y -qq "./$deb" >/dev/null
touch "$marker"
getent passwd radguard | grep -q ':/var/lib/radguard:/usr/sbin/nologin$' || fail "no radguard system user"
[[ $(stat -c '%U:%G %a' "$data") == "radguard:radguard 750" ]] || fail "$data: $(stat -c '%U:%G %a' "$data")"
[[ $(stat -c '%U:%G %a' /etc/radguard/radguard.toml) == "root:radguard 640" ]] \
  || fail "config: $(stat -c '%U:%G %a' /etc/radguard/radguard.toml)"
got=$(radguard --version)
[[ $got == "radguard $version (commit $commit)" ]] || fail "--version: $got"
log "$got"
radguard config check /etc/radguard/radguard.toml >/dev/null || fail "config check"
unit=$(systemctl show -P FragmentPath radguard 2>/dev/null || true)
[[ -n $unit ]] || unit=$(dpkg -L radguard | grep '/radguard.service$')
systemd-analyze verify "$unit"
exposure=$(systemd-analyze security --offline=yes "$unit" 2>&1 | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
log "systemd-analyze security --offline=yes: exposure $exposure"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 2.0) }' || fail "exposure $exposure > 2.0"

step "run as the service user on the data folder"
# The packaged command line, on a free port and without the console's fixed port.
cfg=$(mktemp /tmp/radguard-pkg-XXXXXX.toml)
chmod 644 "$cfg"
sed 's/127.0.0.1:11112/127.0.0.1:0/' /etc/radguard/radguard.toml >"$cfg"
printf '\n[admin]\nenabled = false\n' >>"$cfg"
out=$(mktemp)
setpriv --reuid=radguard --regid=radguard --init-groups -- radguard --log-format json serve --config "$cfg" --data "$data" >"$out" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  grep -q 'listening on dicom://' "$out" && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
grep -q 'listening on dicom://' "$out" || { cat "$out"; fail "the gateway did not start as radguard"; }
kill -TERM "$pid"
wait "$pid" || { cat "$out"; fail "the gateway did not stop cleanly"; }
rm -f "$cfg" "$out"
[[ -d $data/vault && -d $data/ledger ]] || fail "no vault or ledger in $data"
find "$data" -mindepth 1 -maxdepth 1 | sort >target/debian/data-before.txt

step "upgrade (edited conffile kept)"
echo "# edited by the operator" >>/etc/radguard/radguard.toml
apt-get install -y -qq -o Dpkg::Options::=--force-confold "./$deb2" >/dev/null
grep -q "edited by the operator" /etc/radguard/radguard.toml || fail "the upgrade replaced the edited config"
[[ $(dpkg-query -W -f='${Version}' radguard) == "${version}-2" ]] || fail "not upgraded"
find "$data" -mindepth 1 -maxdepth 1 | sort | diff -u target/debian/data-before.txt - || fail "the upgrade changed $data"

step "remove (data and config kept), purge (data kept)"
apt-get remove -y -qq radguard >/dev/null
[[ ! -e /usr/bin/radguard ]] || fail "remove left the binary"
[[ -f /etc/radguard/radguard.toml ]] || fail "remove took the config"
find "$data" -mindepth 1 -maxdepth 1 | sort | diff -u target/debian/data-before.txt - || fail "remove changed $data"
apt-get purge -y -qq radguard >/dev/null
[[ ! -e /etc/radguard/radguard.toml ]] || fail "purge left the config"
find "$data" -mindepth 1 -maxdepth 1 | sort | diff -u target/debian/data-before.txt - || fail "purge changed $data"

# This test's own data folder goes; the system user stays (Debian does not remove them).
rm -rf "$data"
step "package OK (${deb##*/}, SBOM ${sbom##*/})"
