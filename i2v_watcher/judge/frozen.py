"""`frozen`: runs of (near-)identical consecutive frames: the clip stalls. Symptom `frozen`.

Two consecutive kept frames are the same when the mean absolute difference of their grey (at the
working size) is below FROZEN_NOISE: 0.001 of full scale, ffmpeg freezedetect's default noise (-60 dB).
A model's frames are never that close unless they repeat (a stalled sampler, a duplicated chunk, a
looping decode); a still but living scene differs by more (grain, light).

Score: the longest run of same pairs / all pairs, 0-1, higher is more frozen. Symptom `frozen` when it
exceeds `max_frozen` (default 0.15: with 16 frames, three same pairs in a row, four frames, half a second
at 8 fps; with 81 frames about 0.75 s). A clip that does not move at all but is not a copy is
`no_motion`, not `frozen`."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np

from i2v_watcher.config.gate import Thresholds
from i2v_watcher.judge.clip import Clip

FROZEN_NOISE = 0.001 * 255


def pair_differences(clip: Clip) -> list[float]:
    greys = clip.greys.astype(np.float32)
    return [float(np.abs(greys[later] - greys[earlier]).mean())
            for earlier, later in pairwise(clip.kept)]


def longest_run(flags: list[bool]) -> int:
    best = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def judge(clip: Clip, limits: Thresholds) -> tuple[float, bool, dict[str, Any]]:
    differences = pair_differences(clip)
    run = longest_run([difference < FROZEN_NOISE for difference in differences])
    score = run / len(differences) if differences else 0.0
    return score, score > limits.max_frozen, {
        "pair_mean_abs_diff": [round(difference, 3) for difference in differences],
        "longest_frozen_pairs": run}
