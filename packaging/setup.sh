#!/usr/bin/env bash
# Idempotent setup on a fresh Debian machine (as root): system packages, the venv in .venv,
# pfsfuse installed editable with its test dependencies, and the Azurite emulator in .emulators.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/packaging/install-system-deps.sh"
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  "$venv/bin/pip" install -q -e "$root[test]"
  touch "$stamp"
fi
azurite=3.35.0
if ! grep -qs "\"version\": \"$azurite\"" "$root/.emulators/node_modules/azurite/package.json"; then
  npm install --prefix "$root/.emulators" --no-audit --no-fund --silent "azurite@$azurite" >/dev/null
fi
# Bytecode for our own modules, as a regular install has it: an editable install compiles them
# only when first imported, and not at all where PYTHONDONTWRITEBYTECODE is set (30-40 ms a start).
"$venv/bin/python" -m compileall -q "$root/metadata" "$root/pfsfuse" "$root/scheduler" "$root/tools"
