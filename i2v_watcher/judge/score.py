"""The judgement of one clip: every score, its symptom, and the verdict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from i2v_watcher.config.gate import Thresholds
from i2v_watcher.judge import black, drift, flicker, frozen, motion, sharpness
from i2v_watcher.judge.clip import Clip

# Each score's key, the module that owns its rule, and its symptom's name; in the metadata's order.
RULES = (("motion", motion, "no_motion"), ("frozen", frozen, "frozen"), ("flicker", flicker, "flicker"),
         ("drift", drift, "drift"), ("sharpness", sharpness, "blur"))
SCORES = ("motion", "frozen", "flicker", "black", "drift", "sharpness")
SYMPTOMS = ("no_motion", "frozen", "flicker", "black", "drift", "blur")
Verdict = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Judgement:
    """`scores`: exactly SCORES (floats, each module's docstring has its formula and direction);
    `symptoms`: the failing ones, in SYMPTOMS' order; `details`: sub-measures (SSIM, PSNR, per-pair
    figures); `verdict`: "fail" with any symptom, else "pass" (the gate may later mark "warn")."""

    scores: dict[str, float]
    symptoms: list[str]
    details: dict[str, Any] = field(default_factory=dict)
    verdict: Verdict = "pass"

    def as_dict(self) -> dict[str, Any]:
        """The metadata's `quality` object (without the gate's `attempts`)."""
        return {"scores": dict(self.scores), "symptoms": list(self.symptoms), "verdict": self.verdict,
                "details": dict(self.details)}


def score(frames: np.ndarray, image: np.ndarray, fps: float, thresholds: Thresholds | None = None
          ) -> Judgement:
    """Judge generated `frames` (T, H, W, 3) uint8 RGB against the input `image` (H, W, 3) uint8, as the
    backend resized it to the frame size, at `fps`."""
    limits = thresholds or Thresholds()
    clip = Clip.prepare(frames, image, fps)
    scores = {"black": black.score(clip.blank)}
    found = {"black"} if scores["black"] > limits.max_black else set()
    details: dict[str, Any] = {"working_size": list(clip.size), "blank_frames":
                               [index for index, empty in enumerate(clip.blank) if empty]}
    for key, module, symptom in RULES:
        value, failing, more = module.judge(clip, limits)
        scores[key] = round(float(value), 4)
        details.update(more)
        if failing:
            found.add(symptom)
    if not clip.kept:  # nothing but blank frames: only `black` says anything
        found &= {"black"}
    symptoms = [name for name in SYMPTOMS if name in found]
    return Judgement({key: scores[key] for key in SCORES}, symptoms, details,
                     "fail" if symptoms else "pass")


def rank(attempt: Mapping[str, Any]) -> tuple[int, float]:
    """Which of several judged clips of one image is best, lower first: fewer symptoms, then less drift
    from the input. The quality gate keeps the best attempt by it (keep: best, re-rolls), and the
    dashboard ranks the published variants of a set (keep: all) by it."""
    return len(attempt["symptoms"]), float(attempt["scores"].get("drift", 0.0))
