"""Draw examples/fox.jpg, the Quickstart's sample image: a red fox in fresh snow at dawn, mountains
and a forest behind it. Made in code (Pillow and numpy, both core dependencies), so the repository
holds no photo with an unknown licence. Run from the repository root:

    .venv/bin/python examples/make_fox.py
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 768, 512
SCALE = 2  # drawn at twice the size, then scaled down: smooth edges
W, H = WIDTH * SCALE, HEIGHT * SCALE
OUT = Path(__file__).with_name("fox.jpg")
Color = tuple[int, int, int]


def mix(a: Color, b: Color, t: float) -> Color:
    t = min(1.0, max(0.0, t))
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t), round(a[2] + (b[2] - a[2]) * t))


def ridge(rng: random.Random, base: float, amplitude: float, waves: int) -> list[float]:
    """A mountain ridge: the height of each column, from a few sine waves of random phase."""
    parts = [(rng.uniform(0.5, 1.0) / (i + 1), rng.uniform(1, 3) * (i + 1), rng.uniform(0, math.tau))
             for i in range(waves)]
    return [base - amplitude * sum(a * math.sin(f * x / W * math.tau + p) for a, f, p in parts)
            for x in range(W)]


def sky() -> Image.Image:
    y = np.linspace(0, 1, H)[:, None]
    x = np.linspace(0, 1, W)[None, :]
    top, horizon = np.array([38, 62, 112]), np.array([250, 190, 150])
    t = np.clip(y / 0.55, 0, 1) ** 1.4
    rgb = top[None, None, :] * (1 - t[..., None]) + horizon[None, None, :] * t[..., None]
    rgb = np.broadcast_to(rgb, (H, W, 3)).copy()
    glow = np.exp(-(((x - 0.3) / 0.18) ** 2 + ((y - 0.5) / 0.12) ** 2))  # the sun behind the hills
    rgb += glow[..., None] * np.array([60, 45, 20])
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def layer(heights: list[float], top: Color, bottom: Color, blur: float) -> tuple[Image.Image, Image.Image]:
    """A filled ridge with a vertical gradient, and its mask."""
    mask = Image.new("L", (W, H), 0)
    ImageDraw.Draw(mask).polygon([(0, H), *enumerate(heights), (W - 1, H)], fill=255)
    lo = min(heights)
    t = np.clip((np.arange(H)[:, None] - lo) / (H * 0.35), 0, 1)
    rgb = np.array(top)[None, None, :] * (1 - t[..., None]) + np.array(bottom)[None, None, :] * t[..., None]
    fill = Image.fromarray(np.broadcast_to(rgb, (H, W, 3)).astype(np.uint8))
    if blur:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    return fill, mask


def trees(draw: ImageDraw.ImageDraw, rng: random.Random, heights: list[float], color: Color) -> None:
    x = 0.0
    while x < W:
        base = heights[int(x)] + rng.uniform(4, 14)
        tall = rng.uniform(40, 110)
        half = tall * rng.uniform(0.22, 0.3)
        for tier in range(4):  # a conifer: stacked triangles, narrower towards the top
            y0 = base - tall * tier / 4
            w = half * (1 - tier / 5)
            draw.polygon([(x - w, y0), (x + w, y0), (x, y0 - tall * 0.42)], fill=color)
        x += rng.uniform(10, 34)


def snow(img: Image.Image, top: float) -> None:
    y = np.arange(H)[:, None].astype(float)
    x = np.arange(W)[None, :].astype(float)
    t = np.clip((y - top) / (H - top), 0, 1)
    drift = 0.5 + 0.5 * np.sin(x / W * 7 + y / H * 3) * np.cos(x / W * 3.1 - y / H * 5)
    near, far = np.array([214, 224, 242]), np.array([250, 236, 226])
    rgb = far * (1 - t[..., None]) + near * t[..., None] - (drift * 14 * t)[..., None]  # soft hollows
    field = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    mask = Image.new("L", (W, H), 0)
    edge = [top + 10 * math.sin(i / W * 5) + 6 * math.sin(i / W * 17) for i in range(W)]
    ImageDraw.Draw(mask).polygon([(0, H), *enumerate(edge), (W - 1, H)], fill=255)
    img.paste(field, (0, 0), mask.filter(ImageFilter.GaussianBlur(3)))


def fox(img: Image.Image, cx: float, cy: float, size: float) -> None:
    s = size
    shadow = Image.new("L", (W, H), 0)
    ImageDraw.Draw(shadow).ellipse([cx - 1.1 * s, cy + 0.55 * s, cx + 1.3 * s, cy + 0.8 * s], fill=110)
    img.paste((120, 130, 170), (0, 0), shadow.filter(ImageFilter.GaussianBlur(s * 0.08)))

    red, dark, cream, black = (196, 88, 34), (140, 56, 24), (246, 232, 214), (40, 28, 24)
    d = ImageDraw.Draw(img)
    # The tail, curving up behind the body, with its white tip.
    for i in range(28):
        t = i / 27
        tx = cx - s * (0.75 + 0.55 * t)
        ty = cy + s * (0.05 - 0.35 * math.sin(t * 2.6))
        r = s * (0.16 + 0.1 * math.sin(t * math.pi))
        d.ellipse([tx - r, ty - r, tx + r, ty + r], fill=mix(dark, red, t) if t < 0.82 else cream)
    # Legs: the far pair darker, mid-stride.
    for lx, dx, shade in ((0.45, 0.12, black), (-0.55, -0.1, black), (0.3, -0.08, dark), (-0.4, 0.1, dark)):
        x0 = cx + lx * s
        d.line([(x0, cy + 0.1 * s), (x0 + dx * s, cy + 0.62 * s)], fill=shade, width=max(2, int(s * 0.11)))
    d.ellipse([cx - 0.85 * s, cy - 0.32 * s, cx + 0.7 * s, cy + 0.3 * s], fill=red)  # body
    d.ellipse([cx - 0.5 * s, cy - 0.05 * s, cx + 0.55 * s, cy + 0.3 * s], fill=(226, 120, 60))  # flank light
    hx, hy = cx + 0.8 * s, cy - 0.38 * s  # the head
    d.polygon([(cx + 0.3 * s, cy - 0.3 * s), (hx - 0.15 * s, hy - 0.15 * s), (hx + 0.12 * s, hy + 0.18 * s),
               (cx + 0.68 * s, cy + 0.12 * s)], fill=red)  # neck
    d.polygon([(hx - 0.02 * s, hy + 0.16 * s), (hx + 0.16 * s, hy + 0.18 * s), (cx + 0.7 * s, cy + 0.1 * s),
               (cx + 0.55 * s, cy + 0.02 * s)], fill=cream)  # throat
    d.ellipse([hx - 0.28 * s, hy - 0.24 * s, hx + 0.28 * s, hy + 0.24 * s], fill=red)
    d.polygon([(hx + 0.12 * s, hy - 0.12 * s), (hx + 0.62 * s, hy + 0.08 * s), (hx + 0.1 * s, hy + 0.2 * s)],
              fill=red)  # snout
    d.polygon([(hx + 0.05 * s, hy + 0.12 * s), (hx + 0.6 * s, hy + 0.09 * s), (hx + 0.12 * s, hy + 0.24 * s)],
              fill=cream)
    d.ellipse([hx + 0.55 * s, hy + 0.04 * s, hx + 0.66 * s, hy + 0.13 * s], fill=black)  # nose
    for ex, lean in ((-0.14, -0.12), (0.1, 0.02)):  # ears
        d.polygon([(hx + ex * s, hy - 0.12 * s), (hx + (ex + 0.2) * s, hy - 0.1 * s),
                   (hx + (ex + lean + 0.06) * s, hy - 0.55 * s)], fill=dark)
    d.ellipse([hx + 0.14 * s, hy - 0.08 * s, hx + 0.22 * s, hy], fill=black)  # eye


def main() -> None:
    rng = random.Random(7)
    img = sky()
    far = ridge(rng, H * 0.42, H * 0.09, 4)
    mid = ridge(rng, H * 0.5, H * 0.05, 5)
    fill, mask = layer(far, (150, 150, 190), (196, 178, 196), 1.5)
    img.paste(fill, (0, 0), mask)
    fill, mask = layer(mid, (92, 104, 150), (150, 150, 180), 1.0)
    img.paste(fill, (0, 0), mask)
    forest = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    trees(ImageDraw.Draw(forest), rng, [h + H * 0.06 for h in mid], (44, 58, 72))
    forest = forest.filter(ImageFilter.GaussianBlur(1.2))
    img.paste(forest, (0, 0), forest)
    snow(img, H * 0.6)
    img = img.filter(ImageFilter.GaussianBlur(1.5))  # the background slightly out of focus
    fox(img, W * 0.52, H * 0.72, H * 0.16)
    small = img.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS)
    grain = np.random.default_rng(7).normal(0, 2.2, (HEIGHT, WIDTH, 1))
    pixels = np.clip(np.asarray(small, dtype=float) + grain, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(OUT, quality=85, optimize=True, progressive=True)
    print(f"{OUT}: {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
