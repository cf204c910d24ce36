#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages pfsfuse needs (as root); with --test, also the tools the test
# suite calls. Installs only what is missing, so a second run does nothing.
set -euo pipefail
# FUSE 3 for the mount; a C compiler, pkg-config, the headers and patch so that pyfuse3 can be
# built with pfsfuse's patch (build-pyfuse3.sh).
pkgs=(fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv patch)
if [ "${1:-}" = --test ]; then
  # pgrep (procps), mount/umount (mount), getfattr (attr), rsync and sqlite3, which the tests run;
  # runc and busybox-static run worker pods for real (tests/kube/test_runc_pods.py), libc6-dev
  # builds the static launcher
  pkgs+=(procps mount attr rsync sqlite3 runc busybox-static libc6-dev)
  # the browser Playwright drives in the web console's tests (Playwright's own builds are not fetched)
  pkgs+=(chromium)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm for Azurite, the Azure Blob emulator of the object-store tests (any Node.js >= 18
# will do: one already installed, e.g. from NodeSource with its own npm, is kept).
if [ "${1:-}" = --test ] && ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "note: all there"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "missing packages: ${missing[*]}; run this as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "note: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
