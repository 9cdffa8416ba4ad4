"""The diffusion backends, end to end through the daemon, on tiny random-weight pipelines that are
built in code, saved with save_pretrained and loaded back through the real from_pretrained path."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import Daemon, Folders, Video, decode, make_image
from i2v_watcher.backends.attempt import Plan, Preloaded
from i2v_watcher.backends.diffusion import DiffusersBackend
from i2v_watcher.backends.i2vgen_xl import I2VGenXLBackend
from i2v_watcher.job.spec import JobParams
from tiny_models import build_i2vgen_xl, build_svd, build_wan_i2v

Start = Callable[..., Daemon]
CPU = {"device": "cpu"}
SMALL_STEPS = {"num_frames": 4, "steps": 2, "resolution": "64p", "fps": 8.0}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"i2vgen-xl": build_i2vgen_xl(root / "i2vgen-xl"), "svd": build_svd(root / "svd"),
            "wan-i2v": build_wan_i2v(root / "wan-i2v")}


def use(folders: Folders, tiny: dict[str, Path], backend: str, **extra: object) -> Path:
    return folders.write_config(
        backend=backend, defaults=dict(SMALL_STEPS), diffusion={**CPU, **extra.pop("diffusion", {})},  # type: ignore[dict-item]
        models={name: {"model": str(path)} for name, path in tiny.items()}, **extra)


def serve_seeded_jobs(folders: Folders, start: Start, backend: str,
                      sidecar: str) -> tuple[Daemon, list[Video]]:
    """Three jobs of one image and sidecar through a real daemon (a and b with seed 7, c with seed 8),
    the config's backend loaded once for all three; their clips in that order."""
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        make_image(folders.inbox / f"{name}.png", (96, 72), seed=3)
        (folders.inbox / f"{name}.yaml").write_text(f"prompt: a red fox\nseed: {seed}\n{sidecar}")
    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=300) == 0, daemon.log
    loads = [e for e in daemon.events() if e["event"] == "backend loaded"]
    assert [e["backend"] for e in loads] == [backend]  # loaded once for three jobs
    return daemon, [decode(folders.outbox / f"{n}.mp4") for n in "abc"]


def test_i2vgen_xl_end_to_end_loads_once_and_is_reproducible(folders: Folders, tiny: dict[str, Path],
                                                             start: Start) -> None:
    use(folders, tiny, "i2vgen-xl")
    daemon, (a, b, c) = serve_seeded_jobs(folders, start, "i2vgen-xl", "num_frames: 5\n")
    assert (a.frames, a.width, a.height) == (5, 88, 64)  # 96x72 at 64p, sides rounded to multiples of 8
    assert np.array_equal(a.pixels, b.pixels) and not np.array_equal(a.pixels, c.pixels)
    meta = folders.metadata("a")
    assert meta["backend"] == "i2vgen-xl" and meta["model"] == str(tiny["i2vgen-xl"])
    assert meta["generation"]["asked"] == {"resolution": "64p", "num_frames": 5}
    assert meta["generation"]["oom_rung"] == 0 and meta["notes"] == []
    assert {"torch", "diffusers", "transformers"} <= set(meta["versions"])
    progress = [e for e in daemon.events() if e["event"] == "progress" and e.get("job") == "a"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] == 2  # the denoising steps


def test_oom_ladder_steps_down_then_the_next_job_runs_at_full_settings(
        folders: Folders, tiny: dict[str, Path], start: Start) -> None:
    use(folders, tiny, "i2vgen-xl", plugins=["oom_injection"], diffusion={
        "oom_ladder": [{"resolution": "32p"}, {"num_frames": 0.5}, {"offload": "model"}]})
    make_image(folders.inbox / "1-big.png", (96, 72))
    (folders.inbox / "1-big.yaml").write_text("prompt: '[oom] a fox'\n")
    make_image(folders.inbox / "2-normal.png", (96, 72))
    make_image(folders.inbox / "3-hopeless.png", (96, 72))
    (folders.inbox / "3-hopeless.yaml").write_text("prompt: '[oom-always]'\n")
    # Taken in the order they arrived (1, 2, 3): the files' ctime, which a utime would move to now.
    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=300) == 3, daemon.log
    big = folders.metadata("1-big")["generation"]
    assert big["oom_rung"] == 3 and len(big["oom_ladder_tried"]) == 4
    assert (big["width"], big["height"], big["num_frames"]) == (40, 32, 2)
    assert big["oom_ladder_tried"][-1]["offload"] == "model"
    assert decode(folders.outbox / "1-big.mp4").frames == 2
    normal = folders.metadata("2-normal")["generation"]
    assert (normal["oom_rung"], normal["width"], normal["num_frames"]) == (0, 88, 4)
    report = folders.report("3-hopeless")
    assert report["stage"] == "generate" and "every rung of the OOM ladder" in report["message"]
    assert report["message"].count("'rung'") == 4


def test_more_backends_by_config_and_fields_they_cannot_honour(folders: Folders, tiny: dict[str, Path],
                                                              start: Start) -> None:
    use(folders, tiny, "svd", backends=["wan-i2v"])
    make_image(folders.inbox / "still.png", (96, 72))
    (folders.inbox / "still.yaml").write_text("prompt: ignored by an image-only model\nnum_frames: 3\n")
    make_image(folders.inbox / "wan.png", (96, 72))
    (folders.inbox / "wan.yaml").write_text("backend: wan-i2v\nprompt: a boat\nnum_frames: 4\n")
    make_image(folders.inbox / "chunky.png", (96, 72))
    (folders.inbox / "chunky.yaml").write_text("backend: wan-i2v\ndecode_chunk_size: 2\n")
    make_image(folders.inbox / "absent.png", (96, 72))
    (folders.inbox / "absent.yaml").write_text("backend: i2vgen-xl\n")
    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=300) == 3, daemon.log
    still = folders.metadata("still")
    assert still["backend"] == "svd" and still["notes"] == ["prompt is ignored by the svd backend"]
    assert decode(folders.outbox / "still.mp4").frames == 3
    wan = folders.metadata("wan")
    assert wan["backend"] == "wan-i2v" and wan["generation"]["num_frames"] == 5  # 4k+1
    assert wan["generation"]["asked"]["num_frames"] == 4
    assert decode(folders.outbox / "wan.mp4").frames == 5
    chunky = folders.report("chunky")
    assert "cannot honour decode_chunk_size" in chunky["message"]
    assert "not loaded by this daemon" in folders.report("absent")["message"]


def test_a_missing_model_directory_is_a_startup_error(folders: Folders, tiny: dict[str, Path],
                                                     start: Start, tmp_path: Path) -> None:
    use(folders, tiny, "i2vgen-xl")
    folders.write_config(models={"i2vgen-xl": {"model": str(tmp_path / "no-such-model")}})
    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=120) == 2
    assert "no-such-model" in daemon.log and "does not exist" in daemon.log


def test_auto_without_cuda_falls_back_to_preview_loudly(folders: Folders, tiny: dict[str, Path],
                                                        start: Start) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: auto would pick the diffusion backend")
    use(folders, tiny, "auto", diffusion={"device": "cuda"})
    make_image(folders.inbox / "x.png")
    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=120) == 0, daemon.log
    warning = next(e for e in daemon.events() if "FALLING BACK" in e["event"])
    assert warning["level"] == "warning" and "CUDA" in warning["reason"]
    assert folders.metadata("x")["backend"] == "preview"


def test_an_explicit_diffusion_backend_without_cuda_does_not_fall_back(
        folders: Folders, tiny: dict[str, Path], start: Start) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    use(folders, tiny, "i2vgen-xl", diffusion={"device": "cuda"})
    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=120) == 2 and "no usable CUDA GPU" in daemon.log


def test_prompt_embeddings_match_the_pipelines_own_encoding(tiny: dict[str, Path]) -> None:
    from diffusers import I2VGenXLPipeline

    from i2v_watcher.backends.i2vgen_xl import encode_prompt

    pipe = I2VGenXLPipeline.from_pretrained(tiny["i2vgen-xl"])
    encoder = pipe.text_encoder
    if not hasattr(encoder, "text_model"):  # transformers 5: let the pipeline's code find its layer norm
        encoder.text_model = SimpleNamespace(final_layer_norm=encoder.final_layer_norm)
    pipe._guidance_scale = 9.0
    theirs, their_negative = pipe.encode_prompt("a red fox in the snow", torch.device("cpu"), 1,
                                                negative_prompt="blurry", clip_skip=1)
    ours = encode_prompt(pipe, "a red fox in the snow", torch.device("cpu"))
    negative = encode_prompt(pipe, "blurry", torch.device("cpu"))
    assert torch.equal(ours, theirs) and torch.equal(negative, their_negative)
    assert not torch.equal(ours, encode_prompt(pipe, "a red fox in the snow", torch.device("cpu"), None))


@pytest.mark.gpu
def test_i2vgen_xl_on_cuda_in_bfloat16(folders: Folders, tiny: dict[str, Path], start: Start) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU with CUDA; none here")
    use(folders, tiny, "i2vgen-xl", diffusion={"device": "cuda", "dtype": "bfloat16"})
    make_image(folders.inbox / "gpu.png")
    assert start(folders.config, "--once").wait(timeout=300) == 0
    assert folders.metadata("gpu")["generation"]["dtype"] == "bfloat16"


def test_a_hub_id_missing_from_the_cache_is_a_startup_error_that_says_so(
        folders: Folders, tiny: dict[str, Path], start: Start, tmp_path: Path) -> None:
    use(folders, tiny, "svd")
    folders.write_config(models={"svd": {"model": "nobody/no-such-model"}})
    daemon = start(folders.config, "--once", HF_HOME=str(tmp_path / "hf"))
    assert daemon.wait(timeout=120) == 2
    assert "nobody/no-such-model" in daemon.log and "Hugging Face cache" in daemon.log


def test_resolution_auto_follows_the_gpu_memory_rule_and_says_why() -> None:
    from i2v_watcher.backends.capacity import auto_short_side

    side, reason = auto_short_side("cpu")
    assert side == 512 and "no CUDA device" in reason


def test_nan_or_black_frames_fail_the_job_with_a_hint() -> None:
    from i2v_watcher.backends.attempt import to_uint8
    from i2v_watcher.errors import JobError

    good = torch.full((5, 3, 8, 8), 0.5)
    assert to_uint8(good).max() == 128
    late_nan = good.clone()
    late_nan[4, 1, 2, 3] = float("nan")  # in the last chunk only
    with pytest.raises(JobError, match="NaN") as caught:
        to_uint8(late_nan, chunk=2)
    assert "bfloat16" in caught.value.hint
    with pytest.raises(JobError, match="all-black"):
        to_uint8(torch.zeros_like(good), chunk=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_frames_become_uint8_on_the_device_as_numpy_made_them_on_the_host(dtype: torch.dtype) -> None:
    """The pipeline's frames (count, 3, height, width) become uint8 where they are, chunk by chunk, with
    the same bytes as the float32 arithmetic numpy did on the host before."""
    from i2v_watcher.backends.attempt import to_uint8

    video = (torch.rand((7, 3, 6, 10), generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1).to(dtype)
    video[0, 0, 0, :4] = torch.tensor([0.5 / 255, 1.5 / 255, 2.5 / 255, 254.5 / 255])  # ties, half to even
    before = video.float().permute(0, 2, 3, 1).numpy().copy()
    np.clip(before, 0.0, 1.0, out=before)
    before *= 255.0
    expected = np.rint(before).astype(np.uint8)
    for chunk in (1, 3, 8):
        pixels = to_uint8(video, chunk=chunk)
        assert pixels.dtype == np.uint8 and pixels.flags.c_contiguous and np.array_equal(pixels, expected)


def test_decoding_the_latents_passes_progress_points_after_the_last_step(tiny: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    """The VAE decode has no step callback: without its own progress points, a long decode would look
    hung to the lease and to systemd's watchdog."""
    from i2v_watcher import backends
    from i2v_watcher.config.settings import Settings
    from i2v_watcher.job.spec import JobSpec, resolve

    settings = Settings(inbox=tmp_path / "in", outbox=tmp_path / "out", failed=tmp_path / "failed",
                        done=tmp_path / "done", work=tmp_path / "work", diffusion=CPU,  # type: ignore[arg-type]
                        defaults=SMALL_STEPS, models={"i2vgen-xl": {"model": str(tiny["i2vgen-xl"])}})
    backends.discover([])
    backend = backends.get("i2vgen-xl")(settings)
    backend.load()
    calls: list[tuple[int, int]] = []
    params = resolve(JobSpec.model_validate({"prompt": "a fox"}), settings.defaults, backend="i2vgen-xl",
                     seed=1)
    image = make_image(tmp_path / "x.png", (64, 64))
    with Image.open(image) as img:
        backend.generate(img.convert("RGB"), params, lambda done, total: calls.append((done, total)))
    steps = [c for c in calls if c[0] < c[1]]
    assert [c[0] for c in steps] == [1] and calls.index((2, 2)) == len(steps)  # the two denoising steps
    decode_points = calls[len(steps) + 1:]
    assert len(decode_points) >= 2 and set(decode_points) == {(2, 2)}, calls
    assert not backend.pipe.vae.decoder._forward_pre_hooks  # removed after the job
    assert "progress_bar" not in vars(backend.pipe)  # the pipeline's own method again


def test_a_diffusion_backend_without_the_diffusion_extra_is_a_clear_startup_error(
        folders: Folders, tiny: dict[str, Path], start: Start, tmp_path: Path) -> None:
    from conftest import PLUGINS, REPO

    fake = tmp_path / "site"
    (fake / "diffusers").mkdir(parents=True)
    (fake / "diffusers" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'diffusers'\", name='diffusers')\n")
    use(folders, tiny, "svd")
    daemon = start(folders.config, "--once", PYTHONPATH=os.pathsep.join(map(str, (fake, PLUGINS, REPO))))
    assert daemon.wait(timeout=120) == 2, daemon.log
    assert "Traceback" not in daemon.log
    error = next(e for e in daemon.events() if e["event"] == "cannot start")
    assert "diffusion extra" in error["error"] and "diffusers is not installed" in error["error"]


# ---- preloading the next job while one generates ------------------------------------------------------
Loaded = Callable[..., DiffusersBackend]


@pytest.fixture(scope="module")
def loaded(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    """A loaded backend for tests that call it in-process, one per (name, diffusion settings)."""
    from i2v_watcher import backends
    from i2v_watcher.config.settings import Settings

    root = tmp_path_factory.mktemp("dirs")
    made: dict[str, DiffusersBackend] = {}

    def load(name: str, cls: type[DiffusersBackend] | None = None, **diffusion: object) -> DiffusersBackend:
        key = f"{name} {cls} {sorted(diffusion.items())}"
        if key not in made:
            settings = Settings(inbox=root / "in", outbox=root / "out", failed=root / "failed",
                                done=root / "done", work=root / "work", diffusion={**CPU, **diffusion},  # type: ignore[arg-type]
                                defaults=SMALL_STEPS, models={n: {"model": str(p)} for n, p in tiny.items()})
            backends.discover([])
            backend = (cls or backends.get(name))(settings)
            assert isinstance(backend, DiffusersBackend)
            backend.load()
            made[key] = backend
        return made[key]
    return load


def job(backend: DiffusersBackend, seed: int = 5, **spec: object) -> JobParams:
    from i2v_watcher.job.spec import JobSpec, resolve

    fields = {} if "prompt" in backend.ignores else {"prompt": "a red fox", "negative_prompt": "blurry"}
    return resolve(JobSpec.model_validate({**fields, **spec}), backend.settings.defaults,
                   backend=backend.name, seed=seed)


def rgb(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def ignore(done: int, total: int) -> None:
    return None


def _unused(*args: object) -> Any:
    raise AssertionError("generate() redid work the preload had done")


@pytest.mark.parametrize("name", ["i2vgen-xl", "svd"])
def test_a_preload_gives_the_same_frames_as_generating_alone(loaded: Loaded, name: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    backend = loaded(name)
    image = rgb(make_image(tmp_path / "x.png", (96, 72), seed=3))
    params = job(backend, num_frames=3 if name == "svd" else 4)
    alone = backend.generate(image, params, ignore)
    ready = backend.preload(image, params)
    assert isinstance(ready, Preloaded) and ready.image.size == (88, 64)
    assert ready.plan.num_frames == params.num_frames
    monkeypatch.setattr(backend, "resize", _unused)
    if name == "i2vgen-xl":  # its prompt embeddings; SVD has nothing to compute ahead
        assert set(ready.conditioning or ()) == {"prompt_embeds", "negative_prompt_embeds"}
        monkeypatch.setattr(backend, "conditioning", _unused)
    else:
        assert ready.conditioning is None
    calls: list[tuple[int, int]] = []
    steps_by = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total))
        steps_by.append("progress_bar" in vars(backend.pipe))

    frames = backend.generate(image, params, progress, preloaded=ready)
    assert np.array_equal(frames.pixels, alone.pixels) and frames.details == alone.details
    # Steps reach the progress callback through diffusers' callback_on_step_end; I2VGen-XL has none.
    assert calls[:2] == [(1, 2), (2, 2)] and set(calls[2:]) == {(2, 2)}, calls
    assert set(steps_by) == {name == "i2vgen-xl"}


def test_a_preload_made_for_other_parameters_or_another_image_is_not_used(loaded: Loaded,
                                                                          tmp_path: Path) -> None:
    backend = loaded("i2vgen-xl")
    image = rgb(make_image(tmp_path / "x.png", (96, 72), seed=3))
    other = rgb(make_image(tmp_path / "y.png", (96, 72), seed=4))  # same size and mode
    params = job(backend)
    ready = backend.preload(image, params)
    smaller = params.model_copy(update={"resolution": "32p"})
    frames = backend.generate(image, smaller, ignore, preloaded=ready)
    assert (frames.width, frames.height) == (40, 32)
    assert np.array_equal(frames.pixels, backend.generate(image, smaller, ignore).pixels)
    frames = backend.generate(other, params, ignore, preloaded=ready)
    assert np.array_equal(frames.pixels, backend.generate(other, params, ignore).pixels)
    assert not np.array_equal(frames.pixels, backend.generate(image, params, ignore).pixels)


def test_a_preload_runs_beside_a_generating_job_and_changes_nothing_of_it(loaded: Loaded,
                                                                         tmp_path: Path) -> None:
    backend = loaded("i2vgen-xl")
    first, second = (rgb(make_image(tmp_path / f"{n}.png", (96, 72), seed=n)) for n in (1, 2))
    first_params, second_params = job(backend, seed=1), job(backend, seed=2, prompt="a boat at sea")
    expected = [backend.generate(first, first_params, ignore).pixels,
                backend.generate(second, second_params, ignore).pixels]
    made: list[object] = []
    worker = threading.Thread(target=lambda: made.append(backend.preload(second, second_params)))

    def progress(done: int, total: int) -> None:
        if worker.ident is None:  # in the first step: the preload runs beside the UNet
            worker.start()

    got = [backend.generate(first, first_params, progress).pixels]
    worker.join(timeout=60)
    assert isinstance(made[0], Preloaded) and made[0].conditioning is not None  # prompts encoded beside it
    got.append(backend.generate(second, second_params, ignore, preloaded=made[0]).pixels)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


class _OutOfMemoryUntilOffloaded(I2VGenXLBackend):
    """Out of GPU memory (injected) on every rung that runs without offload."""

    def call(self, image: Image.Image, params: JobParams, plan: Plan, generator: Any,
             extra: dict[str, Any]) -> Any:
        if plan.offload is None:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return super().call(image, params, plan, generator, extra)


def test_the_oom_ladder_works_with_a_preload_and_offload_keeps_prompts_for_the_job(
        loaded: Loaded, tmp_path: Path) -> None:
    """A smaller rung resizes the input itself; while a rung's offload hooks move modules, a preload
    leaves the prompts to generate()."""
    ladder = [{"resolution": "32p"}, {"offload": "model"}]
    backend = loaded("i2vgen-xl", _OutOfMemoryUntilOffloaded, oom_ladder=ladder)
    image = rgb(make_image(tmp_path / "x.png", (96, 72), seed=3))
    params = job(backend)
    during: list[Preloaded] = []

    def progress(done: int, total: int) -> None:
        if not during:
            worker = threading.Thread(target=lambda: during.append(backend.preload(image, params)))
            worker.start()
            worker.join(timeout=60)

    frames = backend.generate(image, params, progress, preloaded=backend.preload(image, params))
    assert frames.details["oom_rung"] == 2 and (frames.width, frames.height) == (40, 32)
    # As a job at 32p with offload gives them (offload hooks alone change a few pixels by one level).
    offloaded = loaded("i2vgen-xl", offload="model")
    assert np.array_equal(frames.pixels, offloaded.generate(
        image, params.model_copy(update={"resolution": "32p"}), ignore).pixels)
    assert during and during[0].conditioning is None  # made on the offload rung: no prompts
    assert backend.preload(image, params).conditioning is not None  # after the job, the hooks are gone


def test_a_backend_loaded_with_offload_encodes_no_prompts_in_a_preload(loaded: Loaded,
                                                                       tmp_path: Path) -> None:
    backend = loaded("i2vgen-xl", offload="model")
    image = rgb(make_image(tmp_path / "x.png", (96, 72), seed=3))
    ready = backend.preload(image, job(backend))
    assert isinstance(ready, Preloaded) and ready.conditioning is None and ready.image.size == (88, 64)
