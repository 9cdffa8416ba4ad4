"""`black`: blank frames (black, washed-out white, or one flat colour). Symptom `black`.

A frame (grey, at the working size) is blank when any of these holds and does NOT hold for the input image
(a night scene stays judged by the other scores):
- dark: at least 98 % of its pixels at or below 10 % of full scale (25.5 of 255): ffmpeg's blackdetect
  defaults (pic_th = 0.98, pix_th = 0.10);
- washed out: at least 98 % of its pixels at or above 90 % of full scale;
- flat: the standard deviation of its luma below 2 levels (no picture at all: a grey or coloured card).

Score: blank frames / all frames, 0-1, higher is more blank. Judged by `max_black` (default 0: any blank
frame is a defect, as today's check fails an all-black clip). The other scores leave blank frames out:
a black flash is `black`, not also flicker, a frozen run or drift."""

from __future__ import annotations

import numpy as np

PICTURE_SHARE = 0.98
DARK_LEVEL = 0.10 * 255
BRIGHT_LEVEL = 0.90 * 255
FLAT_STD = 2.0


def _kinds(grey: np.ndarray) -> set[str]:
    found = set()
    if np.mean(grey <= DARK_LEVEL) >= PICTURE_SHARE:
        found.add("dark")
    if np.mean(grey >= BRIGHT_LEVEL) >= PICTURE_SHARE:
        found.add("washed_out")
    if float(grey.std()) < FLAT_STD:
        found.add("flat")
    return found


def blank_frames(greys: np.ndarray, image_grey: np.ndarray) -> list[bool]:
    """Per frame: blank in a way the input image is not."""
    own = _kinds(image_grey)
    return [bool(_kinds(frame) - own) for frame in greys]


def score(blank: list[bool]) -> float:
    return sum(blank) / len(blank) if blank else 0.0
