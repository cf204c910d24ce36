#!/usr/bin/env bash
# The linters: ruff's checks, ruff's formatting (checked, not applied) and mypy's type checks, on
# the four source roots and the tests. Exits non-zero if any of them finds something; runs all three
# either way. `ruff format .` and `ruff check --fix .` apply what the first two can.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin="$root/.venv/bin"
if [ ! -x "$bin/ruff" ] || [ ! -x "$bin/mypy" ]; then
  echo "lint: ruff or mypy is missing from .venv: run packaging/test-setup.sh" >&2
  exit 2
fi
status=0
run() {
  echo "\$ $*"
  "$@" || status=1
}
run "$bin/ruff" check .
run "$bin/ruff" format --check .
run "$bin/mypy"
exit $status
