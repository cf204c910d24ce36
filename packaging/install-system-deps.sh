#!/usr/bin/env bash
# Installs the system packages pfsfuse needs on Debian/Ubuntu (run as root).
# FUSE 3 for the mount; pkg-config and the headers so pip can build pyfuse3.
set -euo pipefail
# Node.js and npm for Azurite, the Azure Blob emulator of the object-store tests (any Node.js >= 18
# will do: one already installed, e.g. from NodeSource with its own npm, is kept).
pkgs=(fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv rsync sqlite3 attr)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
