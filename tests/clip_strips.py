"""Pictures of the symptoms for docs/quality-gate.md: one PNG strip per test clip (tests/clips.py), the
input image first, then the frames that show the clip's defect, each labelled with its frame number.

    python tests/clip_strips.py [docs/images]

Palette PNGs of 64 colours, under 30 KB each, so they can live in the repository."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clips import CLIPS

REPO = Path(__file__).resolve().parent.parent
GAP = 4
# The frames that show each clip's defect (or, for a good clip, its movement).
PICKS = {"pan": [0, 5, 10, 15], "moving_object": [0, 5, 10, 15], "zoom": [0, 5, 10, 15],
         "frozen": [4, 5, 6, 10, 11], "flicker": [3, 4, 5, 6], "black_flashes": [5, 6, 7, 11],
         "no_motion": [0, 5, 10, 15], "colour_drift": [0, 5, 10, 15], "structure_drift": [0, 5, 10, 15],
         "blur": [0, 1, 2, 15]}


def strip(name: str) -> Image.Image:
    frames, image = CLIPS[name][0]()
    tiles = [("input", image), *((f"frame {index}", frames[index]) for index in PICKS[name])]
    height, width = image.shape[:2]
    canvas = Image.new("RGB", (len(tiles) * (width + GAP) - GAP, height + 14), "white")
    draw = ImageDraw.Draw(canvas)
    for position, (label, picture) in enumerate(tiles):
        left = position * (width + GAP)
        canvas.paste(Image.fromarray(np.ascontiguousarray(picture)), (left, 14))
        draw.text((left + 2, 1), label, fill="black")
    return canvas.quantize(64, dither=Image.Dither.NONE)


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else REPO / "docs" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for name in PICKS:
        target = folder / f"clip-{name.replace('_', '-')}.png"
        strip(name).save(target, optimize=True)
        print(f"{target}: {target.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
