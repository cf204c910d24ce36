#!/usr/bin/env bash
# Sets everything up on a fresh Debian machine (as root), runs the linters, then the whole test suite.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/packaging/test-setup.sh"
cd "$root"
echo "==> lint: ruff check, ruff format --check, mypy"
if ! packaging/lint.sh; then
  echo "FAILED: lint (packaging/lint.sh); 'ruff check --fix .' and 'ruff format .' fix what they can" >&2
  exit 1
fi
echo "==> tests: pytest"
exec .venv/bin/pytest -q "$@"
