#!/usr/bin/env bash
# Sets everything up on a fresh Debian machine (as root) and runs the whole test suite.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/packaging/test-setup.sh"
cd "$root"
exec .venv/bin/pytest -q "$@"
