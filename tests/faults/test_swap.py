"""The model swap (swap_backends) in a real daemon: a worker that keeps the preview resident and may
swap in two model backends (tests/plugins/folder_models.py: a "model" read from a folder, loaded through
the backend's own `load()`) serves a mixed inbox. Every job is published once, by the model its
sidecar names; the jobs of the loaded model go before a swap, so each model is swapped in once; each
swap is logged with its seconds, counted in /metrics and noted in the metadata of the job it was for.
A model folder that cannot be loaded fails the one job that asked for it with a plain report, and the
daemon goes on; a later job for it is tried again only after swap_retry_s."""

from __future__ import annotations

import itertools
import signal
import urllib.request
from datetime import datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from conftest import Folders, make_image, wait_for
from faults.celery_helpers import free_port

from .conftest import Spawn, visible
from .test_workers import assert_each_published_once

MODELS = ("folder-a", "folder-b")
BROKEN = "folder-broken"


def model_folders(tmp_path: Path) -> dict[str, dict[str, str]]:
    tables = {}
    for name in (*MODELS, BROKEN):
        folder = tmp_path / "models" / name
        folder.mkdir(parents=True)
        if name != BROKEN:  # a broken model folder: nothing to load
            (folder / "model.txt").write_text(f"the {name} model\n")
        tables[name] = {"model": str(folder)}
    return tables


def drop(folders: Folders, name: str, backend: str) -> None:
    make_image(folders.inbox / f"{name}.png", (64, 48), seed=len(name))
    (folders.inbox / f"{name}.yaml").write_text(f"backend: {backend}\nnum_frames: 3\nresolution: 32p\n")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_mixed_inbox_costs_one_swap_per_model_and_a_broken_model_fails_only_its_job(
        folders: Folders, spawn: Spawn, tmp_path: Path) -> None:
    port = free_port()
    config = folders.write_config(backend="preview", plugins=["folder_models"], worker_id="w1",
                                  models=model_folders(tmp_path), swap_backends=[*MODELS, BROKEN],
                                  swap_retry_s=1.0, metrics_port=port)
    # Interleaved, so that taking them in the order they came would swap at almost every job.
    jobs = {"a0": "folder-a", "p0": "preview", "broken": BROKEN, "b0": "folder-b", "a1": "folder-a",
            "p1": "preview", "b1": "folder-b"}
    for name, backend in jobs.items():
        drop(folders, name, backend)
    daemon = spawn(config)
    first = daemon.read_until("model swap failed", timeout=60)
    drop(folders, "late-broken", BROKEN)  # after the failure: waits for swap_retry_s, then tried again
    published = [name for name, backend in jobs.items() if backend != BROKEN]
    assert wait_for(lambda: len([n for n in visible(folders.outbox) if n.endswith(".json")]) == len(published)
                    and len(list(folders.failed.glob("*.error.json"))) == 2, timeout=60), daemon.log
    metrics = scrape(port)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.log

    # Generated in runs of one model each: every job of a loaded model before the next swap.
    order = [jobs[e["job"]] for e in daemon.find("generated")]
    runs = [backend for backend, _ in itertools.groupby(order)]
    assert sorted(runs) == ["folder-a", "folder-b", "preview"], order
    swaps = daemon.find("model swap")
    assert sorted(s["to"] for s in swaps) == list(MODELS), swaps
    assert all(s["load_s"] >= 0 and s["unload_s"] >= 0 and "from" in s for s in swaps)
    failures = daemon.find("model swap failed")
    assert len(daemon.find("model swap starts")) == len(swaps) + len(failures)
    assert [f["to"] for f in failures] == [BROKEN] * 2 and "holds no model.txt" in first["error"]
    assert elapsed(failures[0], failures[1]) >= 1.0  # swap_retry_s: not every job in a loop

    # The broken model's jobs failed with the load's own words; everything else was published once.
    for name in ("broken", "late-broken"):
        report = folders.report(name)
        assert report["message"].startswith(f"could not load the model of backend '{BROKEN}' for this job "
                                            "(a model swap, swap_backends): the model folder"), report
        assert f"[models.{BROKEN}]" in report["hint"]
        for suffix in (".png", ".yaml", ".error.json"):
            (folders.failed / f"{name}{suffix}").unlink()
    assert_each_published_once(folders, published)
    noted = {}
    for name in published:
        meta = folders.metadata(name)
        assert meta["backend"] == jobs[name], name
        if jobs[name] != "preview":
            assert meta["generation"]["model_text"] == f"the {jobs[name]} model", name
        if "swap_load" in meta["timings_s"]:
            noted[name] = meta
    assert sorted(meta["backend"] for meta in noted.values()) == list(MODELS), noted.keys()
    assert all(any(n.startswith("model swap before this job") for n in m["notes"]) for m in noted.values())

    assert metrics[("i2v_model_swaps_total", (("backend", "folder-a"), ("result", "loaded")))] == 1
    assert metrics[("i2v_model_swaps_total", (("backend", "folder-b"), ("result", "loaded")))] == 1
    assert metrics[("i2v_model_swaps_total", (("backend", BROKEN), ("result", "failed")))] == 2


def elapsed(before: dict[str, str], after: dict[str, str]) -> float:
    later, earlier = (datetime.fromisoformat(event["timestamp"]) for event in (after, before))
    return (later - earlier).total_seconds()
