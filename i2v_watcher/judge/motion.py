"""`motion`: how much the clip moves, by VBench's dynamic-degree rule on dense optical flow (clip.py).
Symptom `no_motion`.

Frames are sampled at about 8 fps like VBench (every round(fps / 8)-th frame, at least every frame;
blank frames left out). For each consecutive pair of samples: the flow magnitude at every pixel (at the
working size), and the mean of its top 5 %, `m`. A pair moves when `m` exceeds

    motion_flow_px x (min(h, w) / 256) x max(1, 8 / sampled fps)

(VBench: 6.0 px; h, w the working size, so 6 px at a 256-pixel short side). The clip moves when at least
round(min_motion x N) of its N pairs move (VBench: round(4 x N / 16), min_motion = 0.25).

Score: moving pairs / N, 0-1, higher is more motion (0 for fewer than 2 kept frames). Symptom
`no_motion` when fewer than round(min_motion x N) pairs move. The top 5 % (not the mean) is what makes a
small moving subject over a still background count, as in VBench."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np

from i2v_watcher.config.gate import Thresholds
from i2v_watcher.judge.clip import Clip, flow

SAMPLE_FPS = 8.0
TOP_SHARE = 0.05


def top_mean(vectors: np.ndarray) -> float:
    """Mean of the largest TOP_SHARE of the flow magnitudes."""
    magnitudes = np.hypot(vectors[..., 0], vectors[..., 1]).ravel()
    count = max(1, int(len(magnitudes) * TOP_SHARE))
    return float(np.partition(magnitudes, len(magnitudes) - count)[-count:].mean())


def sampled_flows(clip: Clip) -> tuple[list[np.ndarray], float]:
    """The flows between frames sampled at about SAMPLE_FPS, and the rate they were sampled at."""
    step = max(1, round(clip.fps / SAMPLE_FPS))
    if step == 1:
        return clip.flows, clip.fps
    picked = [index for index in clip.kept if index % step == 0]
    pairs = pairwise(picked)
    return [flow(clip.greys[later], clip.greys[earlier]) for earlier, later in pairs], clip.fps / step


def threshold_px(clip: Clip, sampled_fps: float, limits: Thresholds) -> float:
    return limits.motion_flow_px * (min(clip.size) / 256) * max(1.0, SAMPLE_FPS / sampled_fps)


def judge(clip: Clip, limits: Thresholds) -> tuple[float, bool, dict[str, Any]]:
    """(score, no_motion, details)."""
    flows, sampled_fps = sampled_flows(clip)
    threshold = threshold_px(clip, sampled_fps, limits)
    tops = [top_mean(vectors) for vectors in flows]
    moving = sum(top > threshold for top in tops)
    needed = round(limits.min_motion * len(tops))
    score = moving / len(tops) if tops else 0.0
    details = {"motion_pairs_top5_px": [round(top, 3) for top in tops],
               "motion_threshold_px": round(threshold, 3), "motion_pairs_needed": needed,
               "motion_sample_fps": round(sampled_fps, 3)}
    return score, moving < needed or not tops, details
