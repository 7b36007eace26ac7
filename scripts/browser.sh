#!/usr/bin/env bash
# Install Debian's headless browser for the report's browser test (tests/pipeline/reporting/
# test_html.py): chromium and chromium-driver, which Selenium drives. Idempotent, as
# scripts/slurm_cluster.sh installs SLURM's packages: what is installed already is not fetched.
# Measured on this CI kind of machine (Debian 12, 2 cores): see README, "Tests".
# Usage: scripts/browser.sh install
set -euo pipefail
PACKAGES="chromium chromium-driver"

log() { echo "[browser] $*" >&2; }

install_packages() {
  if [ "$(id -u)" != 0 ]; then log "must run as root (it installs packages)"; exit 2; fi
  local missing=""
  for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  [ -z "$missing" ] && return 0
  log "installing:$missing"
  local started=$SECONDS
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  log "installed in $((SECONDS - started)) s"
}

case "${1:-}" in
  install) install_packages ;;
  *) echo "usage: $0 install" >&2; exit 2 ;;
esac
