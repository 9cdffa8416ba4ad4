"""A fleet whose workers loaded different backends, on one inbox (work.routing): each job is taken by a
worker that has its backend; one whose backend no live worker has waits `unroutable_timeout_s`, shown
as waiting, and is then failed with a report that names it; a backend no registry knows fails at once."""

from __future__ import annotations

import json
import signal

from conftest import Folders, make_image, wait_for
from i2v_watcher.config.settings import load_settings
from i2v_watcher.ops.status import render, snapshot

from .conftest import Spawn, visible
from .test_workers import assert_each_published_once, worker_config

SLOW = {"plugins": ["slow_backend"]}  # tests/plugins: the preview, as a second backend with its own name


def drop_for(folders: Folders, backend: str | None, count: int) -> list[str]:
    names = [f"{backend or 'any'}{index}" for index in range(count)]
    for index, name in enumerate(names):
        make_image(folders.inbox / f"{name}.png", (64, 48), seed=index)
        picked = f"backend: {backend}\n" if backend else ""
        options = "backend_options: {delay_s: 0.05}\n" if backend == "slow" else ""
        (folders.inbox / f"{name}.yaml").write_text(f"{picked}num_frames: 3\nresolution: 32p\n{options}")
    return names


def test_two_workers_with_different_backends_each_take_only_their_jobs(folders: Folders,
                                                                        spawn: Spawn) -> None:
    fleet = {"unroutable_timeout_s": 3.0, **SLOW}
    first = worker_config(folders, "w1", backend="preview", **fleet)
    previewer = spawn(first)
    previewer.read_until("watching")
    assert wait_for(lambda: (folders.work / "w1" / "heartbeat.json").exists(), timeout=10)
    slowpoke = spawn(worker_config(folders, "w2", backend="slow", auto_backend="slow", **fleet))
    slowpoke.read_until("watching")
    # Its auto_backend differs from the live w1's: said once, at start-up.
    (warning,) = slowpoke.find("auto_backend differs from other live workers of this share: a sidecar's "
                               "`backend: auto` means another model on each; set the same auto_backend "
                               "on every worker")
    assert warning["others"] == {"w1": "i2vgen-xl"}
    beat = json.loads((folders.work / "w2" / "heartbeat.json").read_text())
    assert beat["backends"] == ["slow"] and beat["auto_backend"] == "slow"

    for name, sidecar in (("typo", "backend: slwo\n"), ("lonely", "backend: svd\n")):
        make_image(folders.inbox / f"{name}.png", (64, 48))
        (folders.inbox / f"{name}.yaml").write_text(sidecar)
    names = {"preview": drop_for(folders, "preview", 2), "slow": drop_for(folders, "slow", 2),
             None: drop_for(folders, None, 1)}
    # Nobody loaded svd: `status` (and the dashboard, from the same rows) say what it waits for.
    status = snapshot(load_settings(first))
    assert status.unroutable["lonely.png"] == "svd" and "preview0.png" not in status.unroutable
    assert "lonely.png  (waiting for a worker with svd)" in render(status)
    everything = [name for group in names.values() for name in group]
    assert wait_for(lambda: len([n for n in visible(folders.outbox) if n.endswith(".json")]) == 5
                    and (folders.failed / "lonely.error.json").exists(), timeout=90), (previewer.log,
                                                                                      slowpoke.log)
    for daemon in (previewer, slowpoke):
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.log
    typo = folders.report("typo")
    assert "there is no backend 'slwo', did you mean slow?" in typo["message"], typo
    lonely = folders.report("lonely")
    assert "no worker with the backend 'svd' came in 3 s (unroutable_timeout_s)" in lonely["message"]
    waits = previewer.find("job waits: no live worker loaded its backend") + \
        slowpoke.find("job waits: no live worker loaded its backend")
    assert {w["job"] for w in waits} == {"lonely"} and len(waits) <= 2  # once per worker at most
    for name in ("typo", "lonely"):
        for suffix in (".png", ".yaml", ".error.json"):
            (folders.failed / f"{name}{suffix}").unlink()
    assert_each_published_once(folders, everything)
    for backend, worker in (("preview", "w1"), ("slow", "w2")):
        for name in names[backend]:
            meta = folders.metadata(name)
            assert (meta["backend"], meta["worker_id"]) == (backend, worker), name
