"""The original WebUI's troubleshooting table as data (symptom → what to change, in its words where it
has them), and the changes a re-roll makes for each symptom: a pure function of the symptoms, the job's
values and the backend's gate.

What a re-roll changes (the table, applied where it says what to change):
- `no_motion`: motion words appended to the prompt (the table: stiff motion → "naturally, smoothly"; no
  motion → a verb like "moving, rotating"), for backends that read a prompt; for svd, which reads none,
  `motion_bucket_id` raised by MOTION_BUCKET_STEP (up to 255: more motion when higher).
- `drift`: `guidance_scale` raised by the backend's `guidance_step` up to its `guidance_ceiling` (the
  table: subject deforms → raise guidance to 10-12, for I2VGen-XL; config/gate.py has each backend's),
  only for backends that honour guidance_scale.
- every other symptom: nothing but the next seed (the caller's), since the table names no parameter for
  it (flicker: a simpler background is the user's choice of picture)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from i2v_watcher.config.gate import BackendGate

ADVICE: dict[str, str] = {
    "no_motion": ('Stiff or no motion: add "naturally, smoothly" to the prompt, or a motion verb such as '
                  '"moving, rotating" (svd: raise backend_options.motion_bucket_id, 127 by default, up to '
                  "255); try a few seeds."),
    "frozen": ("The clip stalls on repeated frames: generate again with another seed; if it persists, go "
               "back to the standard settings (steps, frames, fps) of the model."),
    "flicker": ("The background flickers: choose an image with a simpler background; for svd, raise "
                "decode_chunk_size; lower guidance_scale and raise steps."),
    "black": ('Blank or black frames: float16 overflow is the usual cause: [diffusion] dtype = "bfloat16" '
              '(or "float32"); check that the input image is not itself nearly black.'),
    "drift": ("The subject deforms or the clip leaves the picture: raise guidance_scale (I2VGen-XL: 10-12; "
              "Wan, LTX, CogVideoX, HunyuanVideo: within 3-7), use fewer frames, add \"distorted, deformed\" "
              "to negative_prompt."),
    "blur": ("The clip is soft or blurry: a higher resolution, more steps; too much motion smears: add "
             '"slow motion" to the prompt.'),
}
MOTION_WORDS = ("moving", "naturally", "smoothly")
MOTION_BUCKET_STEP = 40
MOTION_BUCKET_MAX = 255
DEFAULT_MOTION_BUCKET = 127  # SVD's own default (backends/svd.py)


def advice(symptoms: Collection[str]) -> list[str]:
    """The table's advice for each symptom, in the order given."""
    return [ADVICE[symptom] for symptom in symptoms if symptom in ADVICE]


def with_motion_words(prompt: str) -> str:
    """The prompt with the motion words it lacks appended ("" stays a prompt of motion words alone)."""
    missing = [word for word in MOTION_WORDS if word not in prompt.lower()]
    if not missing:
        return prompt
    stem = prompt.rstrip(" ,.;")
    return ", ".join([stem, *missing]) if stem else ", ".join(missing)


def reroll_changes(symptoms: Collection[str], values: Mapping[str, Any], backend: str, gate: BackendGate,
                   honoured: Collection[str]) -> dict[str, Any]:
    """The job fields (sidecar names) the next attempt changes for these `symptoms`: `values` holds the
    current attempt's `prompt`, `guidance_scale` and `backend_options`; `honoured` the job fields the
    backend uses. Nothing changes where the table says nothing or the backend has no such knob (the
    caller still moves to the next seed). backend_options come back whole (the job's, with the change)."""
    changes: dict[str, Any] = {}
    if "no_motion" in symptoms:
        if backend == "svd":
            options = dict(values.get("backend_options") or {})
            bucket = int(options.get("motion_bucket_id", DEFAULT_MOTION_BUCKET))
            if bucket < MOTION_BUCKET_MAX:
                options["motion_bucket_id"] = min(MOTION_BUCKET_MAX, bucket + MOTION_BUCKET_STEP)
                changes["backend_options"] = options
        elif "prompt" in honoured:
            prompt = str(values.get("prompt") or "")
            if with_motion_words(prompt) != prompt:
                changes["prompt"] = with_motion_words(prompt)
    if "drift" in symptoms and "guidance_scale" in honoured and gate.guidance_step \
            and gate.guidance_ceiling is not None:
        guidance = float(values["guidance_scale"])
        raised = min(gate.guidance_ceiling, round(guidance + gate.guidance_step, 3))
        if raised > guidance:
            changes["guidance_scale"] = raised
    return changes
