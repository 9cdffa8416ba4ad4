"""`flicker`: frame-to-frame brightness and colour jumps that the motion does not explain. Symptom
`flicker`.

For each pair of consecutive kept frames, the frame before is warped onto the next by the flow
(clip.py), and the signed mean of the difference is taken per RGB channel over the pixels the flow
brings from inside the picture: `s[t, c]`, the change of level that no movement accounts for. Its
running sum `b[t, c] = s[1, c] + … + s[t, c]` is the clip's motion-compensated mean brightness over time;
the score is its high-frequency part, the largest

    | b[t, c] - (b[t-1, c] + b[t+1, c]) / 2 |

over the inner frames and the three channels, in levels of 0-255. Higher is more flicker. A steady fade
or a slow change of light is a straight line in `b` (0); a one-frame flash of +F scores F, a clip that
alternates ±A scores 2A. A moving object that uncovers the background leaves a steady residue, which
the second difference removes. Symptom `flicker` above `max_flicker` (default 4 levels, about 1.5 % of
full scale: a step of brightness of 1-2 % of the level is where the eye starts to see it; a VAE that
decodes in chunks makes jumps of that size at the chunk bounds).

Details add VBench's temporal-flickering figure, (255 - mean absolute difference of consecutive frames)
/ 255 (VBench applies it to static clips only; it is here to compare), and the residual mean absolute
difference after warping per pair (texture that boils rather than brightness that jumps)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from i2v_watcher.config.gate import Thresholds
from i2v_watcher.judge.clip import Clip, grid, inside, warp


def unexplained(clip: Clip) -> tuple[np.ndarray, list[float]]:
    """Per pair: the signed mean residual per channel (pairs, 3), and the mean absolute residual."""
    base = grid(clip.size)
    offsets, residues = [], []
    for index, vectors in enumerate(clip.flows):
        earlier, later = clip.kept[index], clip.kept[index + 1]
        positions = base + vectors
        valid = inside(positions)
        if not valid.any():
            offsets.append(np.zeros(3))
            residues.append(0.0)
            continue
        difference = cv2.subtract(clip.frames[later], warp(clip.frames[earlier], positions), dtype=cv2.CV_32F)
        mask = valid.astype(np.uint8)
        offsets.append(np.array(cv2.mean(difference, mask)[:3]))
        residues.append(float(np.mean(cv2.mean(np.abs(difference), mask)[:3])))
    return np.array(offsets, dtype=np.float64).reshape(-1, 3), residues


def high_frequency(levels: np.ndarray) -> np.ndarray:
    """|x[t] - (x[t-1] + x[t+1]) / 2| along the first axis (empty for fewer than 3 entries)."""
    if len(levels) < 3:
        return np.zeros((0, *levels.shape[1:]))
    return np.asarray(np.abs(levels[1:-1] - (levels[:-2] + levels[2:]) / 2))


def judge(clip: Clip, limits: Thresholds) -> tuple[float, bool, dict[str, Any]]:
    offsets, residues = unexplained(clip)
    path = np.vstack([np.zeros((1, 3)), np.cumsum(offsets, axis=0)])
    jumps = high_frequency(path).max(axis=1) if len(path) >= 3 else np.zeros(0)
    score = float(jumps.max()) if len(jumps) else 0.0
    greys = clip.greys[clip.kept].astype(np.float32)
    raw = np.abs(np.diff(greys, axis=0)).mean() if len(greys) > 1 else 0.0
    luma = high_frequency(greys.mean(axis=(1, 2)))
    return score, score > limits.max_flicker, {
        "flicker_jumps": [round(float(jump), 3) for jump in jumps],
        "warp_residual": [round(residue, 3) for residue in residues],
        "luma_high_frequency": round(float(luma.max()) if len(luma) else 0.0, 3),
        "vbench_flicker": round((255 - float(raw)) / 255, 4)}
