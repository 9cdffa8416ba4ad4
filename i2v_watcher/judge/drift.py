"""`drift`: how far the clip is from the input image, in structure and colour, with its movement
taken out. Symptom `drift` ("the subject deforms", "it is not my picture any more").

The flows between consecutive kept frames (clip.py) are chained into a map from each pixel of frame t to
its place in the first frame, taken as the input image's place (the backend starts from the image). The
input is warped by that map onto frame t and compared over the pixels the map brings from inside the
picture (at least MIN_COVERED of the frame; a pan that has left the picture is not compared):
- structure: 1 - SSIM (grey, 7x7 Gaussian window sigma 1.5, the standard constants), 0 the same;
- colour: ΔE (CIE76, in CIELAB) between the mean RGB colours of frame t and of the warped input.

A pan or a moving object moves the map with it, so what stays the same picture scores low; a subject
whose shape or texture is replaced, or a clip that turns another colour, scores high. The first frame
against the input is the t = 0 term (the details also give its SSIM and PSNR).

Score: the largest over the compared frames of max(1 - SSIM, ΔE / COLOUR_SCALE), 0-1 (capped), higher
is further from the input. COLOUR_SCALE = 20: a mean colour 20 ΔE away counts as a different picture.
Symptom `drift` above `max_drift` (default 0.5: SSIM below 0.5, half the structure gone, or a colour
cast of ΔE 10, plain side by side; two unrelated pictures score about 0.7, a picture against itself
after a pan, a moving object or a zoom from finer detail stays below 0.3 in the test clips).

Limits: a shape that changes smoothly is motion to the flow, so a slow deformation that keeps the
picture's texture is not seen; what is seen is the picture's content or colour being replaced.
Pixels the frame before does not explain (more than MATCH_LEVELS apart after warping: what a moving
object uncovers) leave the comparison from then on."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from i2v_watcher.config.gate import Thresholds
from i2v_watcher.judge.clip import Clip, grid, inside, warp

COLOUR_SCALE = 20.0
MIN_COVERED = 0.2
MATCH_LEVELS = 30.0
OUTSIDE = -1e4
ZOOMS = tuple(1 + step / 20 for step in range(11))  # a first frame zoomed in up to 1.5x on the input
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def ssim_map(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of two grey pictures (Wang et al. 2004, Gaussian window)."""
    a, b = first.astype(np.float32), second.astype(np.float32)

    def blur(picture: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(picture, (7, 7), 1.5)

    mean_a, mean_b = blur(a), blur(b)
    var_a = blur(a * a) - mean_a**2
    var_b = blur(b * b) - mean_b**2
    covariance = blur(a * b) - mean_a * mean_b
    return np.asarray((2 * mean_a * mean_b + C1) * (2 * covariance + C2)
                      / ((mean_a**2 + mean_b**2 + C1) * (var_a + var_b + C2)))


def psnr(first: np.ndarray, second: np.ndarray) -> float:
    error = float(np.mean((first.astype(np.float64) - second.astype(np.float64)) ** 2))
    return 100.0 if error == 0 else float(10 * np.log10(255**2 / error))


def lab(colour: np.ndarray) -> np.ndarray:
    """One RGB colour (0-255) in CIELAB."""
    pixel = (np.asarray(colour, np.float32) / 255).reshape(1, 1, 3)
    return np.asarray(cv2.cvtColor(pixel, cv2.COLOR_RGB2LAB)[0, 0], dtype=np.float64)


def similarity(clip: Clip, index: int, positions: np.ndarray) -> float:
    """Mean SSIM of kept frame `index` and the input warped by `positions`, over what they share."""
    covered = cv2.erode(inside(positions).astype(np.uint8), np.ones((7, 7), np.uint8))
    if covered.mean() < MIN_COVERED:
        return -1.0
    image = cv2.cvtColor(warp(clip.image, positions), cv2.COLOR_RGB2GRAY)
    return float(cv2.mean(ssim_map(clip.greys[index], image), covered)[0])


def start_alignment(clip: Clip, base: np.ndarray) -> tuple[np.ndarray, str]:
    """Where each pixel of the first kept frame lies in the input: the frame's own place (a model that
    starts from the image), or, where the clip opens on part of the picture (a camera already zoomed in
    or shifted), the zoom and place of the input that the first frame matches best (normalised
    cross-correlation over ZOOMS), whichever makes the first frame most like the input (SSIM)."""
    # Searched at half the working size (a quarter of the cost), placed back at the working size.
    first = cv2.resize(clip.greys[clip.kept[0]], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    picture = cv2.resize(clip.image_grey, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    height, width = first.shape
    candidates = {"none": base}
    best = (-1.0, 1.0, (0, 0))
    for zoom in ZOOMS:
        size = (round(width / zoom), round(height / zoom))
        template = cv2.resize(first, size, interpolation=cv2.INTER_AREA)
        _, found, _, place = cv2.minMaxLoc(cv2.matchTemplate(picture, template, cv2.TM_CCOEFF_NORMED))
        if found > best[0]:
            best = (found, zoom, (2 * int(place[0]), 2 * int(place[1])))
    _, zoom, (left, top) = best
    matrix = np.array([[1 / zoom, 0, left], [0, 1 / zoom, top]], dtype=np.float32)
    candidates["zoom"] = np.asarray(cv2.transform(base, matrix), dtype=np.float32)
    name = max(candidates, key=lambda key: similarity(clip, clip.kept[0], candidates[key]))
    return candidates[name], name if name == "none" else f"zoom {zoom:.2f} at ({left}, {top})"


def judge(clip: Clip, limits: Thresholds) -> tuple[float, bool, dict[str, Any]]:
    base = grid(clip.size)
    positions, aligned = start_alignment(clip, base) if clip.kept else (base.copy(), "none")
    structure: list[float] = []
    colour: list[float] = []
    for order, index in enumerate(clip.kept):
        if order:  # the map of the frame before, read where this frame's pixels came from
            source = base + clip.flows[order - 1]
            positions = cv2.remap(positions, source, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=(OUTSIDE, OUTSIDE))
            before = warp(clip.greys[clip.kept[order - 1]], source)
            unmatched = np.abs(clip.greys[index].astype(np.float32) - before) > MATCH_LEVELS
            positions[unmatched] = OUTSIDE
        covered = inside(positions)
        if covered.mean() < MIN_COVERED:
            break
        valid = cv2.erode(covered.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        if not valid.any():
            break
        image = warp(clip.image, positions)
        similarity = ssim_map(clip.greys[index], cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        structure.append(1 - cv2.mean(similarity, valid.astype(np.uint8))[0])
        colours = [cv2.mean(picture, valid.astype(np.uint8))[:3] for picture in (clip.frames[index], image)]
        colour.append(float(np.linalg.norm(lab(np.array(colours[0])) - lab(np.array(colours[1])))))
    terms = [max(s, c / COLOUR_SCALE) for s, c in zip(structure, colour, strict=True)]
    score = min(1.0, max(terms)) if terms else 0.0
    details: dict[str, Any] = {"drift_structure": [round(s, 4) for s in structure],
                               "drift_colour_delta_e": [round(c, 3) for c in colour],
                               "drift_start_alignment": aligned}
    if clip.kept:
        first = clip.kept[0]
        details["first_frame_ssim"] = round(float(ssim_map(clip.greys[first], clip.image_grey).mean()), 4)
        details["first_frame_psnr_db"] = round(psnr(clip.frames[first], clip.image), 2)
    return score, score > limits.max_drift, details
