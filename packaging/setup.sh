#!/usr/bin/env bash
# Idempotent setup on a fresh Debian machine (as root): system packages, the venv in .venv,
# and pfsfuse installed editable with its test dependencies. Prints the venv's bin directory.
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
