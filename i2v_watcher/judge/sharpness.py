"""`sharpness`: how sharp the frames are against the input image. Symptom `blur`.

Per kept frame, the variance of its Laplacian (grey, at the working size, 3x3 kernel) divided by the
input image's: 1 as sharp as the input, below 1 softer, above 1 more detail (or noise) than it.
Score: the 25th percentile of those ratios (a quarter of the clip at most may be softer), 0 and up,
higher is sharper; 1 when the input itself has no detail to lose. Symptom `blur` below
`min_sharpness` (default 0.3). The ratio also falls where the picture is legitimately softer: a
video model's VAE smooths fine texture, an enlargement (a zoom that does not render new detail) loses
about a factor z^4 (a zoom to 1.2x halves it), and a pan towards a plainer part of the picture lowers
it; in the test clips the good ones sit at 0.5-1.0 and a Gaussian blur of sigma 2 at 0.04."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from i2v_watcher.config.gate import Thresholds
from i2v_watcher.judge.clip import Clip

NO_DETAIL = 1.0  # a Laplacian variance below this (levels²): a flat input, nothing to compare


def detail(grey: np.ndarray) -> float:
    return float(cv2.Laplacian(grey, cv2.CV_64F, ksize=3).var())


def judge(clip: Clip, limits: Thresholds) -> tuple[float, bool, dict[str, Any]]:
    reference = detail(clip.image_grey)
    ratios = [detail(clip.greys[index]) / reference for index in clip.kept] if reference >= NO_DETAIL else []
    score = float(np.percentile(ratios, 25)) if ratios else 1.0
    return score, score < limits.min_sharpness, {
        "laplacian_variance_input": round(reference, 2),
        "sharpness_ratios": [round(ratio, 4) for ratio in ratios]}
