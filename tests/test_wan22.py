"""Wan 2.2 through the `wan-i2v` backend, end to end through a real daemon: I2V-A14B's two experts and
TI2V-5B's 16x VAE, each a tiny random-weight folder built in code, saved with save_pretrained and
loaded back through the real from_pretrained path (test_diffusion.py does the same for Wan 2.1)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_diffusion import use

from conftest import Daemon, Folders, decode, make_image
from i2v_watcher.backends.wan_i2v import WAN_21_I2V_14B, WAN_22_I2V_A14B, WAN_22_TI2V_5B, wan_variant
from i2v_watcher.errors import StartupError
from tiny_models import build_wan22_a14b, build_wan22_ti2v_5b

Start = Callable[..., Daemon]
TINY = {"num_frames": 4, "steps": 2, "resolution": "32p", "fps": 8.0}  # 2:1 images: 64x32 clips


@pytest.fixture(scope="module")
def a14b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wan22_a14b(tmp_path_factory.mktemp("wan22") / "i2v-a14b")


@pytest.fixture(scope="module")
def ti2v_5b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wan22_ti2v_5b(tmp_path_factory.mktemp("wan22") / "ti2v-5b")


def jobs(folders: Folders, sidecars: dict[str, str]) -> None:
    for name, sidecar in sidecars.items():
        make_image(folders.inbox / f"{name}.png", (128, 64), seed=3)
        (folders.inbox / f"{name}.yaml").write_text(sidecar)


def test_a14b_hands_over_from_the_high_noise_expert_at_the_boundary(folders: Folders, a14b: Path,
                                                                   start: Start) -> None:
    use(folders, {"wan-i2v": a14b}, "wan-i2v", plugins=["wan_expert_trace"])
    folders.write_config(defaults=TINY)
    boat = "prompt: a boat\nguidance_scale: 3.0\n"
    jobs(folders, {"a": f"{boat}seed: 7\n", "b": f"{boat}seed: 7\n",
                   "c": f"{boat}seed: 8\nbackend_options: {{guidance_scale_2: 9.0}}\n"})
    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=300) == 0, daemon.log
    a, b, c = (decode(folders.outbox / f"{n}.mp4") for n in "abc")
    assert (a.frames, a.width, a.height) == (5, 64, 32)  # 4 → 4k+1
    assert np.array_equal(a.pixels, b.pixels) and not np.array_equal(a.pixels, c.pixels)
    generation = folders.metadata("a")["generation"]
    assert generation["asked"]["num_frames"] == 4 and generation["num_frames"] == 5
    assert generation["wan"]["variant"] == "wan2.2-i2v-a14b" and generation["wan"]["boundary_ratio"] == 0.9
    assert generation["wan"]["guidance_scale_2_used"] == 3.0  # unset: the job's guidance_scale
    assert folders.metadata("c")["generation"]["wan"]["guidance_scale_2_used"] == 9.0
    # 2 steps at timesteps 999 and 750; the boundary is 0.9 x 1000: the high-noise expert runs the first
    # step, the low-noise one the second, each twice (the prompt and the negative prompt, for guidance).
    ran = [(e["expert"], round(e["timestep"]), e["guidance"]) for e in daemon.events()
           if e["event"] == "expert ran"]
    assert len(ran) == 12  # 3 jobs x 2 steps x 2 passes
    assert ran[:4] == [("transformer", 999, 3.0)] * 2 + [("transformer_2", 750, 3.0)] * 2  # job a
    assert ran[8:] == [("transformer", 999, 3.0)] * 2 + [("transformer_2", 750, 9.0)] * 2  # c: its own
    assert all((expert == "transformer") == (t >= 900) for expert, t, _ in ran)


def test_ti2v_5b_loads_from_its_text_to_video_index_in_multiples_of_32(folders: Folders, ti2v_5b: Path,
                                                                       start: Start) -> None:
    use(folders, {"wan-i2v": ti2v_5b}, "wan-i2v")
    folders.write_config(defaults=TINY)
    boat = "prompt: a boat\nresolution: 40p\n"
    jobs(folders, {"a": f"{boat}seed: 7\n", "b": f"{boat}seed: 7\n", "c": f"{boat}seed: 8\n",
                   "two": "prompt: a boat\nbackend_options: {guidance_scale_2: 4.0}\n"})
    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=300) == 3, daemon.log  # 3: a job failed (it asked for a second expert)
    a, b, c = (decode(folders.outbox / f"{n}.mp4") for n in "abc")
    assert (a.frames, a.width, a.height) == (5, 64, 32)  # 40p of 128x64: 80x40 in multiples of 16 x 2
    assert np.array_equal(a.pixels, b.pixels) and not np.array_equal(a.pixels, c.pixels)
    meta = folders.metadata("a")
    assert meta["model"] == str(ti2v_5b)
    assert meta["generation"]["asked"] == {"num_frames": 4, "resolution": "40p"}
    assert meta["generation"]["num_frames"] == 5
    wan = meta["generation"]["wan"]
    card = meta["generation"]["model_card"]
    assert wan["variant"] == card["name"] == "wan2.2-ti2v-5b"
    assert card["fps"] == 24.0 and card["native_size"] == [1280, 704]
    assert "boundary_ratio" not in wan
    report = folders.report("two")
    assert "guidance_scale_2 needs Wan 2.2 I2V-A14B" in report["message"]
    assert "Wan 2.2 TI2V-5B" in report["message"]


def test_the_variant_is_what_the_folder_holds() -> None:
    none = [None, None]
    expert = ["diffusers", "WanTransformer3DModel"]
    assert wan_variant({"transformer_2": none, "boundary_ratio": None}) == WAN_21_I2V_14B
    assert wan_variant({}) == WAN_21_I2V_14B  # a diffusers before Wan 2.2 wrote neither key
    assert wan_variant({"transformer_2": expert, "boundary_ratio": 0.9}) == WAN_22_I2V_A14B
    assert wan_variant({"transformer_2": none, "expand_timesteps": True}) == WAN_22_TI2V_5B
    with pytest.raises(StartupError, match="has transformer_2 but no boundary_ratio"):
        wan_variant({"transformer_2": expert, "boundary_ratio": None})
    with pytest.raises(StartupError, match="has boundary_ratio but no transformer_2"):
        wan_variant({"transformer_2": none, "boundary_ratio": 0.9})
