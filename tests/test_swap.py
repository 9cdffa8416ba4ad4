"""The model swap (swap_backends, work.swap), in-process: which jobs a worker with swap backends
claims (its loaded models' jobs first, one swap backend at a time, none during a failed load's retry
time), what a swap does (the old model's last reference dropped, the new one loaded, both timed, told
to the listeners, recorded for the job's metadata), a load that fails, and the settings' checks."""

from __future__ import annotations

import gc
import json
import time
import weakref
from concurrent.futures import wait as futures_wait
from pathlib import Path
from typing import Any, ClassVar

import pytest
from test_liveness import settings_for, write_beat

from conftest import make_image
from i2v_watcher.backends import Backend
from i2v_watcher.backends.preview import PreviewBackend
from i2v_watcher.config.errors import ConfigError
from i2v_watcher.config.models import check_swap_models
from i2v_watcher.config.settings import Settings, load_settings
from i2v_watcher.errors import JobError, StartupError
from i2v_watcher.inbox.watch import Candidate, Queued
from i2v_watcher.job.checkpoint import Activity, Checkpoint
from i2v_watcher.job.records import StagedMetadata
from i2v_watcher.job.state import Job
from i2v_watcher.media.ffmpeg import find_ffmpeg
from i2v_watcher.ops.submit import check_submission
from i2v_watcher.run.pipeline import Pipeline
from i2v_watcher.web.forms import backends_offered
from i2v_watcher.work.claim import claim
from i2v_watcher.work.lease import HEARTBEAT_FILE, Heartbeat
from i2v_watcher.work.routing import Router, unroutable
from i2v_watcher.work.store import WorkStore
from i2v_watcher.work.survey import survey
from i2v_watcher.work.swap import SwapNeeded, Swapped, SwapSlot, with_swap

SWAP = ["ltx-video", "cogvideox-i2v"]
KNOWN = ["preview", "svd", *SWAP]


class Model(PreviewBackend):
    """A backend whose load can be made to fail (a broken model folder)."""

    broken: ClassVar[set[str]] = set()

    def __init__(self, settings: Settings, name: str) -> None:
        super().__init__(settings)
        self.name = name  # type: ignore[misc]  # one class, several registry names

    def load(self) -> None:
        if self.name in self.broken:
            raise StartupError(f"the model folder of {self.name} holds no weights")


def slot(settings: Settings) -> SwapSlot:
    Model.broken = set()
    return SwapSlot(settings, SWAP, make=lambda name: Model(settings, name))


def jobs(tmp_path: Path, *backends: str | None) -> list[Candidate]:
    return [Candidate(f"{backend or 'any'}{index}", image=tmp_path / f"{index}.png", backend=backend)
            for index, backend in enumerate(backends)]


def keys(taken: list[Candidate]) -> list[str]:
    return [c.key for c in taken]


def test_the_loaded_models_jobs_go_first_then_one_swap_backend_at_a_time(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, swap_backends=SWAP)
    swap = slot(settings)
    flying: set[str] = set()  # the jobs the stages have
    router = Router(settings, ["preview"], KNOWN, swap=swap, in_flight=lambda: flying)
    mixed = jobs(tmp_path, "ltx-video", "preview", "cogvideox-i2v", None, "ltx-video")
    taken, _ = router.route(mixed)
    assert keys(taken) == ["preview1", "any3"]  # a job for a loaded model waits: no swap yet
    taken, _ = router.route([c for c in mixed if c.key not in ("preview1", "any3")])
    assert keys(taken) == ["ltx-video0", "ltx-video4"]  # the first job's swap backend, alone
    router.claimed(taken[0])
    flying.add("ltx-video0")
    assert swap.wanted() == "ltx-video" and swap.loaded_name() is None  # planned before it loads
    later = jobs(tmp_path, "cogvideox-i2v", "ltx-video")
    assert router.route(later)[0] == []  # a swap is under way: no other, and its jobs wait for the load
    swap.backend("ltx-video", "ltx-video0", swap=True)
    assert keys(router.route(later)[0]) == ["ltx-video1"]  # the loaded model's jobs before another swap
    assert keys(router.route(later[:1])[0]) == ["cogvideox-i2v0"]
    router.claimed(later[0])  # it never reaches the swap (its sidecar fails the check, say)
    flying.clear()
    assert keys(router.route(later)[0]) == ["ltx-video1"]  # the plan is void: ltx-video is held


def test_a_failed_loads_backend_waits_its_retry_time_and_is_not_reported_unroutable(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, swap_backends=SWAP, unroutable_timeout_s=0.01)
    swap = slot(settings)
    swap.retry_at["ltx-video"] = time.monotonic() + 60
    router = Router(settings, ["preview"], KNOWN, swap=swap)
    waiting = jobs(tmp_path, "ltx-video", "cogvideox-i2v")
    taken, ends = router.route(waiting)
    assert keys(taken) == ["cogvideox-i2v1"]
    assert ends == swap.retry_at["ltx-video"]  # the intake looks again then; no unroutable wait began
    time.sleep(0.02)
    taken, _ = router.route(waiting[:1])
    assert taken == []  # neither taken nor failed as unroutable: its retry comes
    once = Router(settings, ["preview"], KNOWN, swap=swap, once=True)
    assert keys(once.route(waiting[:1])[0]) == ["ltx-video0"]  # a batch run waits for nobody
    swap.retry_at["ltx-video"] = time.monotonic() - 1
    assert keys(router.route(waiting[:1])[0]) == ["ltx-video0"]


def test_a_swap_drops_the_old_model_loads_the_new_one_and_times_both(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, swap_backends=SWAP)
    swap = slot(settings)
    seen: list[Swapped] = []
    swap.listeners.append(seen.append)
    with pytest.raises(SwapNeeded):  # a preload never swaps
        swap.backend("ltx-video", "job1", swap=False)
    activity = Activity()
    first = swap.backend("ltx-video", "job1", swap=True, activity=activity)
    assert swap.backend("ltx-video", "job2", swap=False) is first and swap.holds(first)
    assert swap.take_record("job2") is None
    (record,) = seen
    assert swap.take_record("job1") == record and swap.take_record("job1") is None
    assert (record.before, record.after, record.error) == (None, "ltx-video", "")
    old = weakref.ref(first)
    del first
    second = swap.backend("cogvideox-i2v", "job3", swap=True, activity=activity)
    gc.collect()
    assert old() is None, "the swapped-out model is still referenced"
    assert (seen[-1].before, seen[-1].after) == ("ltx-video", "cogvideox-i2v")
    assert swap.holds(second) and swap.loaded_name() == "cogvideox-i2v"
    assert swap.holds(PreviewBackend(settings))  # a resident backend is never swapped out


def test_a_load_that_fails_fails_its_job_and_is_tried_again_only_after_swap_retry_s(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, swap_backends=SWAP, swap_retry_s=60)
    swap = slot(settings)
    seen: list[Swapped] = []
    swap.listeners.append(seen.append)
    swap.backend("cogvideox-i2v", "job0", swap=True)
    swap.plan("ltx-video", "job1")
    Model.broken = {"ltx-video"}
    with pytest.raises(JobError) as failed:
        swap.backend("ltx-video", "job1", swap=True)
    assert failed.value.message == ("could not load the model of backend 'ltx-video' for this job (a model "
                                    "swap, swap_backends): the model folder of ltx-video holds no weights")
    assert "[models.ltx-video]" in failed.value.hint and "swap_retry_s (60 s)" in failed.value.hint
    assert seen[-1].error and swap.loaded_name() is None and swap.wanted() is None
    with pytest.raises(JobError) as again:  # a job claimed meanwhile: no second load within the retry time
        swap.backend("ltx-video", "job2", swap=True)
    assert "could not be loaded a short while ago" in again.value.message and len(seen) == 2
    Model.broken = set()
    swap.retry_at["ltx-video"] = time.monotonic()  # the retry time came
    assert swap.backend("ltx-video", "job3", swap=True).name == "ltx-video" and len(seen) == 3


def test_the_metadata_records_the_swap_and_its_seconds_apart_from_reading_the_job() -> None:
    metadata = StagedMetadata(job_id="j", timings_s={"load": 3.5, "generate": 2.0})
    swapped = with_swap(metadata, Swapped("ltx-video", "cogvideox-i2v", unload_s=0.5, load_s=2.75))
    assert swapped.timings_s == {"load": 0.25, "generate": 2.0, "swap_unload": 0.5, "swap_load": 2.75}
    assert swapped.notes == ["model swap before this job: ltx-video unloaded in 0.50 s, cogvideox-i2v "
                             "loaded in 2.75 s (swap_backends)"]
    assert with_swap(metadata, None) is metadata


def test_the_heartbeat_offers_swap_backends_so_their_jobs_are_not_shown_as_waiting(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, swap_backends=["ltx-video"])
    settings.worker_dir.mkdir()
    Heartbeat(settings, Activity(), "preview", "", ["preview"], settings.swap_backends).beat()
    beat = json.loads((settings.worker_dir / HEARTBEAT_FILE).read_text())
    assert beat["backends"] == ["preview"] and beat["swap_backends"] == ["ltx-video"]
    plain = settings_for(tmp_path / "plain")
    plain.worker_dir.mkdir()
    Heartbeat(plain, Activity(), "preview", "", ["preview"], plain.swap_backends).beat()
    assert "swap_backends" not in json.loads((plain.worker_dir / HEARTBEAT_FILE).read_text())  # as before
    write_beat(settings.work / "w2", backends=["svd"], swap_backends=["cogvideox-i2v"])
    queued = [Queued(key=b, why="ready", until=None, image=None, backend=b)
              for b in ("ltx-video", "cogvideox-i2v", "hunyuan-i2v")]
    shown = {row.key: row.why for row in unroutable(queued, survey(settings))}
    assert shown == {"ltx-video": "ready", "cogvideox-i2v": "ready",
                     "hunyuan-i2v": "waiting for a worker with hunyuan-i2v"}


@pytest.mark.parametrize(("changes", "message"), [
    ({"backends": ["ltx-video"], "swap_backends": ["ltx-video"]},
     "ltx-video is both loaded resident (`backend`/`backends`) and in swap_backends"),
    ({"swap_backends": ["ltx-video"], "coordination": "celery", "broker_url": "redis://q:6379/0"},
     'swap_backends works with coordination = "folders" only'),
])
def test_settings_that_cannot_swap_are_refused(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    config = tmp_path / "i2v.toml"
    lines = [f'{key} = "{tmp_path / key}"' for key in ("inbox", "outbox", "failed", "done", "work")]
    lines += [f"{key} = {json.dumps(value)}" for key, value in changes.items()]
    config.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert message in str(refused.value)


def test_swap_backends_must_be_backends_that_load_a_model(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, backend="svd", swap_backends=["ltx-vidoe", "preview", "i2vgen-xl"])
    with pytest.raises(StartupError) as refused:
        check_swap_models(settings, [*KNOWN, "i2vgen-xl"], ["svd", "ltx-video", "i2vgen-xl"])
    assert str(refused.value) == (
        "swap_backends: there is no backend 'ltx-vidoe', did you mean ltx-video?; swap_backends: backend "
        "preview loads no model, so there is nothing to swap; backends with models: i2vgen-xl, ltx-video, "
        "svd")


def test_submit_and_the_web_form_accept_the_swap_backends_of_their_config(tmp_path: Path) -> None:
    # With routing, submit takes any registered backend with a model; the swap models are offered too.
    swapping = settings_for(tmp_path / "swapping", swap_backends=["ltx-video"])
    check_submission(swapping, {"backend": "ltx-video", "num_frames": 9})
    assert {"ltx-video", "preview"} <= set(backends_offered(swapping))
    with pytest.raises(StartupError, match="there is no backend 'ltx-vide'"):
        check_submission(swapping, {"backend": "ltx-vide"})


def claimed(settings: Settings, name: str, backend: str) -> Job:
    image = make_image(settings.inbox / f"{name}.png", (64, 48))
    sidecar = settings.inbox / f"{name}.yaml"
    sidecar.write_text(f"backend: {backend}\nnum_frames: 3\nresolution: 32p\n")
    job = claim(settings, WorkStore(settings), Candidate(key=name, image=image, sidecar=sidecar,
                                                        mtime=image.stat().st_mtime))
    assert job is not None
    return job


def test_the_generation_stage_swaps_at_a_jobs_turn_and_never_runs_a_preload_made_before_a_swap(
        tmp_path: Path) -> None:
    settings = settings_for(tmp_path, swap_backends=SWAP, defaults={"num_frames": 3, "resolution": "32p"})
    Model.broken = set()
    made: list[weakref.ref[Backend]] = []
    alive_at_load: list[bool] = []

    def make(name: str) -> Backend:
        alive_at_load.append(any(model() is not None for model in made))
        model = Model(settings, name)
        made.append(weakref.ref(model))
        return model

    swap = SwapSlot(settings, SWAP, make=make)
    stage = Pipeline(settings, {"preview": PreviewBackend(settings)}, find_ffmpeg(None)[0], Checkpoint(),
                     "preview", swap=swap)
    first, other, later = (claimed(settings, n, b) for n, b in (("first", "ltx-video"),
                                                                  ("other", "cogvideox-i2v"),
                                                                  ("later", "ltx-video")))
    stage.start_preload(first)  # nothing loaded: the preload does not swap, the job's turn does
    assert stage.run(first) == "published" and swap.loaded_name() == "ltx-video"
    stage.start_preload(later)  # prepared with the ltx-video model loaded now...
    futures_wait(list(stage._preloads.values()))  # (done: so the model's last holder is known)
    assert stage.run(other) == "published" and swap.loaded_name() == "cogvideox-i2v"
    assert stage.run(later) == "published"  # ...so prepared again at its turn, on a model swapped back in
    stage.close()
    assert alive_at_load == [False, False, False]  # each old model let go before the next loaded
    for name, before in (("first", None), ("other", "ltx-video"), ("later", "cogvideox-i2v")):
        meta = json.loads((settings.outbox / f"{name}.json").read_text())
        assert meta["timings_s"]["swap_load"] >= 0 and meta["backend"] == name_of(meta), name
        assert meta["notes"][-1].startswith(f"model swap before this job: {before or 'nothing'} unloaded")


def name_of(meta: dict[str, Any]) -> str:
    return {"first": "ltx-video", "other": "cogvideox-i2v", "later": "ltx-video"}[meta["input"]["image"][:-4]]
