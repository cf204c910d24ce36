"""Edge detection of every image under /pfs/images into /pfs/out (the tutorial's edges.py)."""

import os

from PIL import Image, ImageFilter


def make_edges(image: str, out: str) -> None:
    with Image.open(image) as img:
        img.convert("L").filter(ImageFilter.FIND_EDGES).save(os.path.join(out, os.path.basename(image)), "PNG")


def main() -> None:
    for dirpath, _, filenames in os.walk("/pfs/images"):
        for name in filenames:
            make_edges(os.path.join(dirpath, name), "/pfs/out")


if __name__ == "__main__":
    main()
