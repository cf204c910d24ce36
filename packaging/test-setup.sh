#!/usr/bin/env bash
# What the tests need beyond setup.sh (as root on Debian): the system tools they call, the Python
# test dependencies, and the Azurite emulator (Node.js) in .emulators. Idempotent, as setup.sh is.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
azurite=3.35.0
. "$root/packaging/steps.sh"

"$root/packaging/setup.sh"

install_test_extras() {
  local stamp="$venv/.installed-test-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
  if [ -f "$stamp" ]; then echo "note: up to date"; return; fi
  "$venv/bin/pip" install -q -e "$root[test]"
  touch "$stamp"
}

install_azurite() {
  if grep -qs "\"version\": \"$azurite\"" "$root/.emulators/node_modules/azurite/package.json"; then
    echo "note: up to date"
    return
  fi
  npm install --prefix "$root/.emulators" --no-audit --no-fund "azurite@$azurite"
}

step "system tools the tests call: procps, mount, attr, rsync, sqlite3, chromium, runc, busybox-static, and Node.js for Azurite" \
  "$root/packaging/install-system-deps.sh" --test
step "test dependencies: pytest, moto, gcp-storage-emulator, playwright" install_test_extras
step "Azurite $azurite (the Azure Blob emulator) in .emulators" install_azurite
