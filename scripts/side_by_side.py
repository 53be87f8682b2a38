"""Puts PNG images side by side, 16 white pixels apart, top-aligned: how the
the before/after grids of docs/results.md are made from the grids `rl-run sample` writes.

usage: .venv/bin/python scripts/side_by_side.py OUT.png IN.png [IN.png ...]
"""

import sys

from PIL import Image

GAP = 16


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    images = [Image.open(path).convert("RGB") for path in sys.argv[2:]]
    width = sum(i.width for i in images) + GAP * (len(images) - 1)
    height = max(i.height for i in images)
    out = Image.new("RGB", (width, height), "white")
    x = 0
    for image in images:
        out.paste(image, (x, 0))
        x += image.width + GAP
    out.save(sys.argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
