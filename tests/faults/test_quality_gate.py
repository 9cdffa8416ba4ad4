"""The quality gate through real daemons: a plugin backend (tests/plugins/defects_backend.py) returns the
test clips of tests/clips.py, with known defects or none, each built from its job's input image, chosen
per job by `backend_options` (and per seed, so that a re-roll gets another clip). Recorded verdicts
match each clip; a re-roll publishes the good attempt with every attempt recorded, or the best one marked
`warn`, or fails; `action = "fail"` writes a report with the original WebUI's advice; a daemon killed
between two attempts keeps the attempts so far and publishes once."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clips import CLIPS, H, W, texture
from PIL import Image

from conftest import Daemon, Folders, decode
from i2v_watcher.judge.advice import ADVICE, with_motion_words

Start = Callable[..., Daemon]
DEFECTS = {"backend": "defects", "plugins": ["defects_backend"],
           "defaults": {"num_frames": 16, "resolution": f"{H}p", "fps": 8.0}}


def drop(folders: Folders, name: str, seed: int, **sidecar: Any) -> np.ndarray:
    """A job: its input image (a photo-like texture at the clips' size) and its sidecar (JSON is YAML)."""
    picture = texture(H, W, 100 + seed)
    Image.fromarray(picture).save(folders.inbox / f"{name}.png")
    (folders.inbox / f"{name}.yaml").write_text(json.dumps({"seed": seed, **sidecar}))
    return picture


def attempts(meta: dict[str, Any]) -> list[tuple[int, dict[str, Any], list[str]]]:
    quality = meta["quality"]
    for attempt in quality["attempts"]:
        assert set(attempt["scores"]) == set(quality["scores"]), attempt
    return [(a["seed"], a["changes"], a["symptoms"]) for a in quality["attempts"]]


def test_recorded_verdicts_and_symptoms_match_each_clip(folders: Folders, start: Start) -> None:
    folders.write_config(**DEFECTS)
    for number, kind in enumerate(CLIPS):
        drop(folders, kind, number, backend_options={"clip": kind})
    daemon = start(folders.config, "--once")
    assert daemon.wait() == 0, daemon.log
    assert folders.files("failed") == [] and folders.files("work") == []
    for number, (kind, (_, expected)) in enumerate(CLIPS.items()):
        meta = folders.metadata(kind)
        quality = meta["quality"]
        assert (meta["generation"]["clip"], quality["symptoms"]) == (kind, expected), quality["scores"]
        assert quality["verdict"] == ("fail" if expected else "pass")
        assert list(quality["scores"]) == ["motion", "frozen", "flicker", "black", "drift", "sharpness"]
        assert attempts(meta) == [(number, {}, expected)] and meta["seed"] == number


def test_fail_action_writes_the_symptom_and_the_advice(folders: Folders, start: Start) -> None:
    folders.write_config(**DEFECTS, quality_gate={"action": "fail"})
    drop(folders, "flickers", 3, backend_options={"clip": "flicker"})
    drop(folders, "good", 4, backend_options={"clip": "zoom"})
    daemon = start(folders.config, "--once")
    assert daemon.wait() == 3, daemon.log  # a job failed in this run
    assert folders.files("failed") == ["flickers.error.json", "flickers.png", "flickers.yaml"]
    report = folders.report("flickers")
    assert report["stage"] == "judge"
    assert report["message"].startswith("the clip failed the quality gate: flicker (seed 3: flicker)")
    assert report["hint"] == ADVICE["flicker"]
    assert folders.metadata("good")["quality"]["verdict"] == "pass"
    assert folders.files("work") == []


def frames_of(folders: Folders, name: str) -> np.ndarray:
    return decode(folders.outbox / f"{name}.mp4").pixels.astype(np.float32)


def nearest_clip(folders: Folders, name: str, picture: np.ndarray, kinds: list[str]) -> str:
    """Which clip the published MP4 holds, by its frames (the encode is lossy, the clips far apart)."""
    published = frames_of(folders, name)
    distance = {kind: float(np.abs(published - CLIPS[kind][0](picture=picture)[0]).mean()) for kind in kinds}
    return min(distance, key=lambda kind: distance[kind])


@pytest.mark.parametrize("depth", [2, 0], ids=["pipelined", "one-stage"])
def test_rerolls_publish_the_good_attempt_or_the_best_one(folders: Folders, start: Start, depth: int) -> None:
    folders.write_config(**DEFECTS, pipeline_depth=depth,
                         quality_gate={"action": "reroll", "defects": {"guidance_step": 1.0,
                                                                        "guidance_ceiling": 12.0}})
    drop(folders, "motion", 7, prompt="a cat",
         backend_options={"clip": "pan", "clip_by_seed": {"7": "no_motion"}})
    drop(folders, "drift", 7, guidance_scale=5.0,
         backend_options={"clip": "moving_object", "clip_by_seed": {"7": "colour_drift"}})
    # Both attempts fail: the first (blur, little drift) is better than the last (drift 1.0).
    warned = drop(folders, "warned", 7, quality_gate={"max_rerolls": 1},
                  backend_options={"clip": "colour_drift", "clip_by_seed": {"7": "blur"}})
    drop(folders, "failed", 7, quality_gate={"max_rerolls": 1, "on_exhausted": "fail"},
         backend_options={"clip": "frozen"})
    daemon = start(folders.config, "--once")
    assert daemon.wait() == 3, daemon.log

    motion = folders.metadata("motion")
    assert (motion["seed"], motion["quality"]["verdict"], motion["generation"]["clip"]) == (8, "pass", "pan")
    prompt = with_motion_words("a cat")
    assert attempts(motion) == [(7, {}, ["no_motion"]), (8, {"prompt": prompt}, [])]
    assert motion["prompt"] == motion["generation"]["prompt"] == prompt  # the attempt published

    drift = folders.metadata("drift")
    assert (drift["seed"], drift["quality"]["verdict"]) == (8, "pass")
    assert drift["generation"]["clip"] == "moving_object"
    assert attempts(drift) == [(7, {}, ["drift"]), (8, {"guidance_scale": 6.0}, [])]
    assert drift["generation"]["guidance_scale"] == 6.0

    best = folders.metadata("warned")
    assert (best["seed"], best["generation"]["clip"]) == (7, "blur")  # the best attempt, not the last
    assert (best["quality"]["verdict"], best["quality"]["symptoms"]) == ("warn", ["blur"])
    assert attempts(best) == [(7, {}, ["blur"]), (8, {}, ["drift"])]
    assert best["quality"]["scores"] == best["quality"]["attempts"][0]["scores"]
    assert nearest_clip(folders, "warned", warned, ["blur", "colour_drift"]) == "blur"

    report = folders.report("failed")
    assert report["message"].startswith("no attempt passed the quality gate (2 attempts): frozen")
    assert "seed 7: frozen, seed 8: frozen" in report["message"] and report["hint"] == ADVICE["frozen"]
    assert sorted(folders.files("outbox")) == sorted(
        f"{name}.{ext}" for name in ("motion", "drift", "warned") for ext in ("jpg", "json", "mp4"))
    assert folders.files("work") == []
    judged = [(e["job"], e["attempt"]) for e in daemon.events() if e["event"] == "judged"]
    assert sorted(judged) == sorted((name, attempt) for name in ("motion", "drift", "warned", "failed")
                                    for attempt in (1, 2))


def job_state(folders: Folders) -> tuple[Path, dict[str, Any]]:
    (job,) = folders.jobs_in_work()
    state: dict[str, Any] = json.loads((job / "job.json").read_text())
    return job, state


def test_a_kill_between_attempts_keeps_the_attempts_and_publishes_once(folders: Folders,
                                                                      start: Start) -> None:
    # Two kills on one job, each after an attempt was judged (progress): not set aside by the default
    # max_job_crashes (2 deaths in a row).
    folders.write_config(**DEFECTS, quality_gate={"action": "reroll", "max_rerolls": 1})
    picture = drop(folders, "a", 7, backend_options={"clip": "colour_drift", "clip_by_seed": {"7": "blur"}})
    first = start(folders.config, "--once", I2V_CRASH_AT="gate.after_reroll")
    assert first.wait() == -signal.SIGKILL, first.log
    job, state = job_state(folders)
    assert (state["stage"], state["seed"], len(state["gate_attempts"])) == ("claimed", 8, 1)
    assert (job / "best-attempt.npy").is_file()  # the blurred attempt, the best so far

    # The second attempt (drift, worse) is judged; the best one is chosen; killed before its encode.
    second = start(folders.config, "--once", I2V_CRASH_AT="postprocess.before_encode")
    assert second.wait() == -signal.SIGKILL, second.log
    assert [e["attempt"] for e in second.events() if e["event"] == "judged"] == [2]
    assert job_state(folders)[1]["metadata"]["seed"] == 7

    third = start(folders.config, "--once")
    assert third.wait() == 0, third.log
    assert not [e for e in third.events() if e["event"] in ("judged", "generated")]  # only the encode
    assert sorted(folders.files("outbox")) == ["a.jpg", "a.json", "a.mp4"]
    assert folders.files("work") == [] and folders.files("failed") == []
    meta = folders.metadata("a")
    assert (meta["seed"], meta["quality"]["verdict"], meta["generation"]["clip"]) == (7, "warn", "blur")
    assert attempts(meta) == [(7, {}, ["blur"]), (8, {}, ["drift"])]
    assert nearest_clip(folders, "a", picture, ["blur", "colour_drift"]) == "blur"  # not the scratch copy
