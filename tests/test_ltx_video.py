"""The `ltx-video` backend end to end: a tiny random-weight LTX-Video folder, built in code and saved with
save_pretrained, served by a real daemon through the real from_pretrained path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_diffusion import use

from conftest import Daemon, Folders, decode, make_image
from i2v_watcher.backends.ltx_video import DISTILLED_TIMESTEPS, LtxVideoBackend
from i2v_watcher.config.settings import Settings
from tiny_models import build_ltx_video

Start = Callable[..., Daemon]


@pytest.fixture(scope="module")
def tiny_ltx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {"ltx-video": build_ltx_video(tmp_path_factory.mktemp("models") / "ltx-video")}


def test_frame_counts_are_planned_as_8k_plus_1_before_diffusers_can_round_them_down(tmp_path: Path) -> None:
    """diffusers turns 5, 6 or 8 frames into one frame without a word; the backend asks for 9."""
    dirs = {name: tmp_path / name for name in ("inbox", "outbox", "failed", "done", "work")}
    backend = LtxVideoBackend(Settings(**dirs))  # type: ignore[arg-type]
    assert [backend.fit_frames(n) for n in (1, 5, 6, 8, 9, 12, 13, 16, 24, 121)] == [
        9, 9, 9, 9, 9, 9, 17, 17, 25, 121]


def test_ltx_video_end_to_end_asked_and_used_frames_seeds_model_and_steps(
        folders: Folders, tiny_ltx: dict[str, Path], start: Start) -> None:
    use(folders, tiny_ltx, "ltx-video")
    sidecars = {"a": "seed: 7\nnum_frames: 5\n", "b": "seed: 7\nnum_frames: 5\n",
                "c": "seed: 8\nnum_frames: 5\n",
                "d": "seed: 7\nnum_frames: 9\nbackend_options: {distilled: true}\n"}
    for name, sidecar in sidecars.items():
        make_image(folders.inbox / f"{name}.png", (96, 72), seed=3)
        (folders.inbox / f"{name}.yaml").write_text(f"prompt: a red fox\n{sidecar}")
    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=300) == 0, daemon.log
    assert [e["backend"] for e in daemon.events() if e["event"] == "backend loaded"] == ["ltx-video"]
    assert "passed without `sigmas`" not in daemon.log  # the pipeline's own timesteps: no warning a job
    a, b, c = (decode(folders.outbox / f"{n}.mp4") for n in "abc")
    assert (a.frames, a.width, a.height) == (9, 96, 64)  # 5 frames asked: 8k+1; 96x72 at 64p: sides of 32
    assert np.array_equal(a.pixels, b.pixels) and not np.array_equal(a.pixels, c.pixels)
    meta = folders.metadata("a")
    assert meta["backend"] == "ltx-video" and meta["model"] == str(tiny_ltx["ltx-video"])
    assert meta["generation"]["asked"] == {"resolution": "64p", "num_frames": 5}
    assert meta["generation"]["num_frames"] == 9 and "schedule" not in meta["generation"]
    progress = [e for e in daemon.events() if e["event"] == "progress" and e.get("job") == "a"]
    assert [e["done"] for e in progress if e["done"] < e["total"]] == [1]  # each denoising step
    assert progress[-1]["done"] == progress[-1]["total"] == 2
    # A distilled checkpoint runs its own timesteps at guidance 1, whatever steps says; recorded.
    distilled = folders.metadata("d")["generation"]
    assert distilled["schedule"] == {"distilled": True, "timesteps": list(DISTILLED_TIMESTEPS),
                                     "steps": 8, "guidance_scale": 1.0}
    steps = [e for e in daemon.events() if e["event"] == "progress" and e.get("job") == "d"]
    assert steps[-1]["done"] == steps[-1]["total"] == len(DISTILLED_TIMESTEPS)
    assert decode(folders.outbox / "d.mp4").frames == 9
