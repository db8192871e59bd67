#!/usr/bin/env bash
# Install what the benchmark needs from Debian's packages: restic, borgbackup and GNU time (/usr/bin/time).
# Idempotent: installs only what is missing (waits for a dpkg lock held by another apt run); needs root or sudo
# only when something is missing.
set -euo pipefail
missing=()
for pkg in restic borgbackup time; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=900 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}"
