#!/usr/bin/env bash
# The quickstart: sets up what the product needs (setup.sh: not the test toolchain), then versions
# some sample data in a scratch store and shows it with the pfs verbs. Safe to run again; leaves
# nothing running. Afterwards `pfs` works in any new shell (setup.sh links it into /usr/local/bin).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/packaging/setup.sh"
export PATH="$root/.venv/bin:$PATH"  # this shell may have looked pfs up before it was linked
export PFS_HOME=${PFS_HOME:-$(mktemp -d /tmp/pfs-quickstart-XXXXXX)}
unset PFS_ADDRESS
data=$(mktemp -d /tmp/pfs-quickstart-data-XXXXXX)
mnt="$data/mnt"
mkdir "$mnt"
trap 'pfs unmount "$mnt" >/dev/null 2>&1 || true; pfs shutdown >/dev/null 2>&1 || true; rm -rf "$data"' EXIT
step() { printf '\n$'; printf ' %q' "$@"; printf '\n'; "$@"; }
# Stops, with the pipeline's logs, when one of its jobs failed.
jobs_ok() {
  if pfs list-job -p "$1" --json | python3 -c 'import json, sys; sys.exit(any(j["state"] == "failure" for j in json.load(sys.stdin)))'; then
    return 0
  fi
  pfs get-logs -p "$1" | tail -n 20 >&2
  echo "quickstart failed: a job of pipeline $1 failed; its logs are above" >&2
  exit 1
}

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

# The beginner tutorial of the Pachyderm docs: edge detection over an images repo, then a montage
# of the images and their edges. Pillow stands in for the OpenCV and ImageMagick images locally.
python3 - "$data" <<'PY'
import sys
from pathlib import Path
from PIL import Image, ImageDraw
out = Path(sys.argv[1])
for name, color in [("liberty.png", "seagreen"), ("AT-AT.png", "slategray"), ("kitten.png", "orange")]:
    img = Image.new("RGB", (320, 240), "white")
    d = ImageDraw.Draw(img)
    d.ellipse((60, 40, 260, 200), fill=color)
    d.rectangle((140, 90, 180, 230), fill="black")
    img.save(out / name)
PY
cat > "$data/edges.json" <<'JSON'
{
  "pipeline": {"name": "edges"},
  "description": "A pipeline that performs image edge detection by using the OpenCV library.",
  "transform": {"cmd": ["python3", "-m", "pfsfuse.tools.examples.edges"], "image": "pachyderm/opencv"},
  "input": {"atom": {"repo": "images", "glob": "/*"}}
}
JSON
cat > "$data/montage.json" <<'JSON'
{
  "pipeline": {"name": "montage"},
  "description": "A pipeline that combines images from the `images` and `edges` repositories into a montage.",
  "input": {"cross": [{"atom": {"glob": "/", "repo": "images"}}, {"atom": {"glob": "/", "repo": "edges"}}]},
  "transform": {"cmd": ["python3", "-m", "pfsfuse.tools.examples.montage"], "image": "v4tech/imagemagick"}
}
JSON
# Pipeline commands run as an unprivileged user (nobody): they must be able to run this
# installation's Python, which a clone under a private home (such as /root) does not allow.
if [ "$(id -u)" = 0 ] && command -v runuser >/dev/null && ! runuser -u nobody -- "$root/.venv/bin/python3" -c 'import pfsfuse' 2>/dev/null; then
  echo "quickstart failed: pipeline commands run as 'nobody', who cannot run $root/.venv/bin/python3" >&2
  echo "(a directory above it is private): clone pfsfuse where every user may read it, such as /opt/pfsfuse" >&2
  exit 1
fi
step pfs create-repo images
step pfs put-file images master liberty.png -f "$data/liberty.png"
step pfs create-pipeline -f "$data/edges.json"
step pfs flush-commit images@master
step pfs list-job
step pfs put-file images master AT-AT.png -f "$data/AT-AT.png"
step pfs flush-commit images@master
step pfs put-file images master kitten.png -f "$data/kitten.png"
step pfs flush-commit images@master
step pfs list-job -p edges
jobs_ok edges
step pfs create-pipeline -f "$data/montage.json"
step pfs flush-commit images@master
jobs_ok montage
step pfs list-repo
step pfs mount "$mnt"
step ls -l "$mnt/edges/master" "$mnt/montage/master"
step python3 -c 'import sys; from PIL import Image; im = Image.open(sys.argv[1]); print(sys.argv[1], im.format, im.size)' "$mnt/montage/master/montage.png"
step pfs unmount "$mnt"
step pfs fsck

link="${PFS_BIN_DIR:-/usr/local/bin}/pfs"
echo
if [ "$(readlink "$link" 2>/dev/null)" = "$root/.venv/bin/pfs" ]; then
  echo "Done. pfs is installed as $link: in a new shell, 'pfs version' starts your own store in"
  echo "~/.pfs (or in \$PFS_HOME); 'pfs --help' lists the verbs."
else
  echo "Done. To use pfs in a new shell: export PATH=\"$root/.venv/bin:\$PATH\""
fi
