"""A model swap between two real (tiny, random-weight) diffusers pipelines, loaded through their
backends' own from_pretrained path: the swapped-out pipeline is really let go (nothing in diffusers,
accelerate or the backend keeps it alive), so its memory can be given back to the next model."""

from __future__ import annotations

import weakref
from pathlib import Path

import pytest

from i2v_watcher import backends
from i2v_watcher.backends.diffusion import DiffusersBackend
from i2v_watcher.config.settings import Settings
from i2v_watcher.work.swap import SwapSlot
from tiny_models import build_i2vgen_xl, build_wan_i2v


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("swapped")
    return {"wan-i2v": build_wan_i2v(root / "wan-i2v"), "i2vgen-xl": build_i2vgen_xl(root / "i2vgen-xl")}


def test_a_swapped_out_pipeline_is_freed_before_the_next_one_loads(tiny: dict[str, Path],
                                                                    tmp_path: Path) -> None:
    settings = Settings(inbox=tmp_path / "in", outbox=tmp_path / "out", failed=tmp_path / "failed",
                        done=tmp_path / "done", work=tmp_path / "work", diffusion={"device": "cpu"},  # type: ignore[arg-type]
                        models={n: {"model": str(p)} for n, p in tiny.items()},  # type: ignore[misc]
                        swap_backends=list(tiny))
    backends.discover([])
    pipes: list[weakref.ref[object]] = []
    alive_at_load: list[bool] = []

    def make(name: str) -> backends.Backend:  # what the slot does to load a model, watched
        alive_at_load.append(any(pipe() is not None for pipe in pipes))
        return backends.get(name)(settings)

    swap = SwapSlot(settings, settings.swap_backends, make=make)
    wan = swap.backend("wan-i2v", "job1", swap=True)
    assert isinstance(wan, DiffusersBackend) and wan.pipe is not None
    pipes += [weakref.ref(wan.pipe), weakref.ref(wan.pipe.transformer)]
    del wan
    i2vgen = swap.backend("i2vgen-xl", "job2", swap=True)
    assert alive_at_load == [False, False], "the swapped-out pipeline was still referenced at the next load"
    assert isinstance(i2vgen, DiffusersBackend) and i2vgen.pipe is not None
    assert swap.loaded_name() == "i2vgen-xl" and i2vgen.loads == 1
