#!/usr/bin/env bash
# setup-web-test.sh -- what the console's real-browser test needs (idempotent; instant when present).
#
#   * Debian package `chromium` (/usr/bin/chromium): the real browser the test drives (headless,
#     --no-sandbox because CI runs as root).
#   * Debian packages `nodejs` and `npm`: node runs tests/browser/console.js.
#   * npm package `playwright-core` (version pinned in tests/browser/package.json) installed into
#     tests/browser/node_modules. playwright-core downloads no browser of its own; the test points
#     it at /usr/bin/chromium.
#
# Usage:  bash scripts/setup-web-test.sh     (as root for apt-get; safe to re-run)
# Env:    SKIP_APT=1   skip apt-get (packages already installed)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[setup-web-test] %s\n' "$*"; }

APT_PKGS=(chromium nodejs npm)
if [[ "${SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  # A node from elsewhere (e.g. NodeSource) counts as present.
  if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
    read -r -a missing <<<"${missing[*]}"
  fi
  if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
      echo "setup-web-test.sh must run as root to install ${missing[*]}" >&2
      exit 1
    fi
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" </dev/null >/dev/null
  else
    log "apt packages present: ${APT_PKGS[*]}"
  fi
fi
[[ -x /usr/bin/chromium ]] || { log "ERROR: /usr/bin/chromium missing"; exit 1; }
command -v node >/dev/null || { log "ERROR: node missing"; exit 1; }

want=$(node -p 'require("./tests/browser/package.json").dependencies["playwright-core"]')
have=$(node -p 'try { require("./tests/browser/node_modules/playwright-core/package.json").version } catch (e) { "" }')
if [[ "$have" == "$want" ]]; then
  log "playwright-core $have present in tests/browser/node_modules"
else
  log "npm install playwright-core@$want into tests/browser/node_modules"
  # No browser download: playwright-core never fetches one; the test uses /usr/bin/chromium.
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund \
    --no-package-lock --loglevel=error </dev/null)
fi
log "$(/usr/bin/chromium --version 2>/dev/null || echo chromium), node $(node --version)"
