#!/usr/bin/env bash
# The quickstart: sets everything up, then versions some sample data in a scratch store and shows
# it with the pfs verbs. Safe to run again; leaves nothing running.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/packaging/setup.sh"
export PATH="$root/.venv/bin:$PATH"
export PFS_HOME=${PFS_HOME:-$(mktemp -d /tmp/pfs-quickstart-XXXXXX)}
unset PFS_ADDRESS
data=$(mktemp -d /tmp/pfs-quickstart-data-XXXXXX)
trap 'pfs shutdown >/dev/null 2>&1 || true; rm -rf "$data"' EXIT
step() { printf '\n$'; printf ' %q' "$@"; printf '\n'; "$@"; }

python3 - "$data" <<'PY'
import csv, random, sys
from pathlib import Path
out = Path(sys.argv[1])
rng = random.Random(7)
for day in (1, 2, 3):
    with open(out / f"sales-2026-11-0{day}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["store", "item", "units", "price"])
        for _ in range(2000):
            w.writerow([rng.choice("ABCDE"), rng.choice(["apple", "pear", "plum"]), rng.randrange(1, 20), rng.randrange(50, 500) / 100])
(out / "README.txt").write_text("Daily sales exports, one CSV per day.\n")
PY

echo "Store: $PFS_HOME (the first pfs command starts its daemon)"
step pfs create-repo sales -d "daily sales exports"
step pfs put-file sales master README.txt -f "$data/README.txt"
step pfs put-file sales master days/2026-11-01.csv -f "$data/sales-2026-11-01.csv"
step pfs start-commit sales master -m "two more days"
step pfs put-file sales master days/2026-11-02.csv -f "$data/sales-2026-11-02.csv"
step pfs put-file sales master days/2026-11-03.csv -f "$data/sales-2026-11-03.csv"
step pfs finish-commit sales master
step pfs list-repo
step pfs list-commit sales
step pfs list-file sales master
step pfs list-file sales master days
step pfs diff-file sales master
step sh -c 'pfs get-file sales master days/2026-11-02.csv | head -4'
step pfs list-file sales master^ days
step pfs glob-file sales master '/days/*-03.csv'
step pfs fsck
