"""`cogvideox-i2v` on tiny random-weight CogVideoX pipelines built in code (1.5's temporal patches; 1.0's
one-size rule from its config), saved with save_pretrained and loaded through the real from_pretrained
path: by a real daemon end to end, and in-process for the frame and size rules."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_diffusion import Loaded, Start, job, loaded, use

from conftest import Folders, decode, make_image
from i2v_watcher.backends.base import Planned
from i2v_watcher.backends.cogvideox_i2v import CARD_1_0, CARD_1_5, CogVideoXImageToVideoBackend
from i2v_watcher.config.settings import Settings
from tiny_models import build_cogvideox_i2v

__all__ = ["loaded"]  # the fixture, loading from this module's `tiny`


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny CogVideoX 1.5 (patch_size_t = 2): the harder case, its latents padded inside the pipeline."""
    root = tmp_path_factory.mktemp("cogvideox")
    return {"cogvideox-i2v": build_cogvideox_i2v(root / "1.5", patch_size_t=2)}


@pytest.mark.slow
def test_a_daemon_serves_cogvideox_with_the_frame_rule_and_reproducible_seeds(
        folders: Folders, tiny: dict[str, Path], start: Start) -> None:
    use(folders, tiny, "cogvideox-i2v")
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        make_image(folders.inbox / f"{name}.png", (40, 40), seed=3)  # 40x40 fails inside the pipeline
        (folders.inbox / f"{name}.yaml").write_text(
            f"prompt: a red fox\nseed: {seed}\nnum_frames: 5\nresolution: 40p\n")
    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=300) == 0, daemon.log
    a, b, c = (decode(folders.outbox / f"{n}.mp4") for n in "abc")
    # asked 5, the pipeline itself would return 8 (two latents): planned as 8k+1, 9 is what was used
    assert (a.frames, a.width, a.height) == (9, 32, 32)  # rounded to multiples of 16 before the pipeline
    assert np.array_equal(a.pixels, b.pixels) and not np.array_equal(a.pixels, c.pixels)
    meta = folders.metadata("a")
    assert meta["backend"] == "cogvideox-i2v" and meta["model"] == str(tiny["cogvideox-i2v"])
    assert meta["generation"]["asked"] == {"resolution": "40p", "num_frames": 5}
    assert meta["generation"]["num_frames"] == 9 and meta["notes"] == []
    progress = [e for e in daemon.events() if e["event"] == "progress" and e.get("job") == "a"]
    assert [(e["done"], e["total"]) for e in progress][:2] == [(1, 2), (2, 2)]  # one point per step


def test_frame_counts_are_planned_as_8k_plus_1_which_the_pipeline_returns_as_asked(loaded: Loaded) -> None:
    backend = loaded("cogvideox-i2v")
    assert isinstance(backend, CogVideoXImageToVideoBackend) and backend.model_card() == CARD_1_5
    # The pipeline alone: 5 or 6 → 8 frames, 10 → 9, 13 → 16 (see the module); 8k+1 comes back as asked.
    assert [backend.fit_frames(n) for n in (1, 5, 6, 10, 13, 49, 81)] == [9, 9, 9, 9, 17, 49, 81]
    # The tiny model's rotary grid is 128x128: a 1080p plan shrinks to fit it, aspect kept.
    planned = backend.planned(1920, 1080, job(backend, num_frames=13, resolution="1080p"))
    assert planned == Planned(128, 64, 17)

def planner(learned: bool, patch_size_t: int | None, sample: tuple[int, int]) -> CogVideoXImageToVideoBackend:
    """A backend whose pipeline is only the config its size rules read."""
    folders = {name: Path(name) for name in ("inbox", "outbox", "failed", "done", "work")}
    backend = CogVideoXImageToVideoBackend(Settings(**folders))  # type: ignore[arg-type]
    config = SimpleNamespace(use_learned_positional_embeddings=learned, patch_size_t=patch_size_t,
                             patch_size=2, sample_width=sample[0], sample_height=sample[1])
    backend.pipe = SimpleNamespace(transformer=SimpleNamespace(config=config), vae_scale_factor_spatial=8)
    return backend


def test_cogvideox_1_0_makes_its_one_size_and_1_5_no_side_beyond_its_sample_grid() -> None:
    one = planner(learned=True, patch_size_t=None, sample=(90, 60))  # THUDM/CogVideoX-5b-I2V
    assert one.model_card() == CARD_1_0 and (CARD_1_0.fps, CARD_1_5.fps) == (8, 16)
    assert one.fit_size(1000, 1000, 512) == (720, 480) == (CARD_1_0.width, CARD_1_0.height)
    one_five = planner(learned=False, patch_size_t=2, sample=(170, 96))  # a grid of 1360x768
    assert one_five.model_card() == CARD_1_5
    assert one_five.fit_size(1920, 1080, 768) == (1360, 768)
    assert one_five.fit_size(1920, 1080, 1080) == (1344, 768)  # shrunk to fit, aspect kept
    assert one_five.fit_size(1080, 1920, 768) == (432, 768)  # portrait: the height is the limit
    assert one_five.fit_size(40, 40, 40) == (32, 32)
