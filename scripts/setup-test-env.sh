#!/usr/bin/env bash
# setup-test-env.sh -- install what the real-peer integration tests need (idempotent).
#
#   * Debian packages: dcmtk (echoscu/storescu/findscu/movescu/storescp/dcmqrscp),
#     orthanc, python3-venv, time.
#   * The Debian Orthanc system service is stopped and disabled: tests start their
#     own Orthanc instances on free ports.
#   * Python venv in <project>/.venv with pinned pydicom / pynetdicom / numpy.
#     pynetdicom installs console scripts named storescu/storescp/... that shadow
#     DCMTK: never put .venv/bin on PATH; the tests call DCMTK as /usr/bin/<tool>.
#
# Usage:  bash scripts/setup-test-env.sh     (as root; safe to re-run)
# Env:    SKIP_APT=1   skip apt-get (packages already installed)
#         PYTHON=...   interpreter for the venv (default: /usr/bin/python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROOT}/.venv"
PYTHON="${PYTHON:-/usr/bin/python3}"
APT_PKGS=(dcmtk orthanc python3-venv time)
PIP_PINS=(pydicom==3.0.2 pynetdicom==3.0.4 numpy==2.4.6)

log() { printf '[setup-test-env] %s\n' "$*"; }

if [[ $(id -u) -ne 0 && "${SKIP_APT:-0}" != 1 ]]; then
  echo "setup-test-env.sh must run as root (apt-get); set SKIP_APT=1 if the packages are installed" >&2
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
      "${APT_PKGS[@]}" </dev/null >/dev/null
  else
    log "apt packages already installed: ${APT_PKGS[*]}"
  fi
fi

# ------------------------------------------- orthanc system service: off
# The Debian package enables orthanc.service / the SysV script and may start it on
# 0.0.0.0:4242 + :8042. The tests run their own instances; stop and disable it.
orthanc_sys_pids() {  # Orthanc processes of the service user (the tests run theirs as themselves)
  local d
  for d in /proc/[0-9]*; do
    [[ "$(cat "$d/comm" 2>/dev/null)" == Orthanc ]] || continue
    [[ "$(stat -c %U "$d" 2>/dev/null)" == orthanc ]] && echo "${d#/proc/}"
  done
  return 0
}
sys_orthanc_listening() {
  command -v ss >/dev/null || return 1
  ss -Hltnp 2>/dev/null | grep -E ':(4242|8042)\b' | grep -qi orthanc
}
if [[ -n "$(orthanc_sys_pids)" ]] || sys_orthanc_listening; then
  log "system Orthanc is running -> stopping it"
  if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl stop orthanc >/dev/null 2>&1 || true
  fi
  if [[ -x /etc/init.d/orthanc ]]; then
    /etc/init.d/orthanc stop >/dev/null 2>&1 || true
  fi
fi
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  systemctl disable orthanc >/dev/null 2>&1 || true
fi
if command -v update-rc.d >/dev/null; then
  update-rc.d orthanc disable >/dev/null 2>&1 || true
fi
for _ in 1 2 3 4 5 6 7 8 9 10; do
  [[ -z "$(orthanc_sys_pids)" ]] && ! sys_orthanc_listening && break
  sleep 1
done
if [[ -n "$(orthanc_sys_pids)" ]] || sys_orthanc_listening; then
  log "ERROR: the system Orthanc is still running:"
  ps -o pid,user,args -p "$(orthanc_sys_pids | tr '\n' ',' | sed 's/,$//')" >&2 || true
  exit 1
fi
log "system Orthanc service is stopped and disabled"

# --------------------------------------------------------------------- pip
if [[ ! -x "${VENV}/bin/python" ]]; then
  log "creating venv ${VENV} (${PYTHON})"
  "${PYTHON}" -m venv "${VENV}"
fi
want_ok=1
for pin in "${PIP_PINS[@]}"; do
  name="${pin%%==*}"; ver="${pin##*==}"
  have="$("${VENV}/bin/python" -m pip show "$name" 2>/dev/null | awk '/^Version:/{print $2}' || true)"
  [[ "$have" == "$ver" ]] || want_ok=0
done
if [[ $want_ok -eq 0 ]]; then
  log "pip install ${PIP_PINS[*]}"
  PIP_NO_INPUT=1 "${VENV}/bin/python" -m pip install -q --disable-pip-version-check \
    --no-input "${PIP_PINS[@]}" </dev/null
else
  log "pip packages already at pinned versions"
fi

# ----------------------------------------------------------------- report
log "installed versions:"
for p in "${APT_PKGS[@]}"; do
  printf '  %-14s %s\n' "$p" "$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || echo MISSING)"
done
printf '  %-14s %s\n' "DCMTK tools" "$(/usr/bin/storescu --version 2>&1 | head -1)"
printf '  %-14s %s\n' "Orthanc" "$(/usr/sbin/Orthanc --version 2>&1 | head -1)"
"${VENV}/bin/python" - <<'PY'
import sys, pydicom, pynetdicom, numpy
print(f"  {'python':<14} {sys.version.split()[0]} ({sys.executable})")
for m in (pydicom, pynetdicom, numpy):
    print(f"  {m.__name__:<14} {m.__version__}")
PY
for t in echoscu storescu findscu movescu storescp dcmqrscp; do
  [[ -x /usr/bin/$t ]] || { log "ERROR: /usr/bin/$t missing"; exit 1; }
done
[[ -x /usr/sbin/Orthanc ]] || { log "ERROR: /usr/sbin/Orthanc missing"; exit 1; }
log "done"
