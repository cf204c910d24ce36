"""A montage of every image under /pfs (the tutorial's ImageMagick `montage` step)."""

import math
import os

from PIL import Image

TILE = 300


def main() -> None:
    paths = sorted(
        os.path.join(d, f) for root in ("/pfs/images", "/pfs/edges") for d, _, files in os.walk(root) for f in files
    )
    cols = max(1, math.ceil(math.sqrt(len(paths))))
    rows = max(1, math.ceil(len(paths) / cols))
    sheet = Image.new("RGB", (cols * (TILE + 4), rows * (TILE + 4)), "skyblue")
    for n, path in enumerate(paths):
        with Image.open(path) as img:
            img.thumbnail((TILE, TILE))
            sheet.paste(img.convert("RGB"), ((n % cols) * (TILE + 4) + 2, (n // cols) * (TILE + 4) + 2))
    sheet.save("/pfs/out/montage.png", "PNG")


if __name__ == "__main__":
    main()
