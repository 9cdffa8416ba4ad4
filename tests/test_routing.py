"""The routing rule (work.routing), in-process against real heartbeat files: which ready jobs a worker
takes, which it leaves for another live worker, and when a job nobody can take is failed."""

from __future__ import annotations

import time
from pathlib import Path

from test_liveness import settings_for, write_beat

from i2v_watcher.backends.preview import PreviewBackend
from i2v_watcher.inbox.watch import Candidate
from i2v_watcher.run.check import check_sidecar
from i2v_watcher.work.routing import Router

KNOWN = ["preview", "slow", "svd", "wan-i2v"]


def candidates(tmp_path: Path) -> list[Candidate]:
    jobs = [("plain", None, None), ("mine", "preview", None), ("theirs", "slow", None),
            ("plugin", "their-plugin", None), ("older", "svd", None), ("nobody", "wan-i2v", None),
            ("typo", "slwo", None), ("broken", "wan-i2v", "several files share the job name")]
    return [Candidate(key, image=tmp_path / f"{key}.png", backend=backend, problem=problem)
            for key, backend, problem in jobs]


def fleet(tmp_path: Path, **changes: object) -> Router:
    settings = settings_for(tmp_path, **changes)
    write_beat(settings.work / "w2", backends=["slow", "their-plugin"], auto_backend="i2vgen-xl")
    write_beat(settings.work / "old", backend="svd")  # a version before `backends`: its default only
    write_beat(settings.work / "gone", age_s=1e6, backends=["wan-i2v"])  # stale: offers nothing
    return Router(settings, ["preview"], KNOWN)


def test_a_worker_takes_its_own_jobs_and_leaves_the_others_to_live_workers(tmp_path: Path) -> None:
    router = fleet(tmp_path)
    taken, ends = router.route(candidates(tmp_path))
    assert [c.key for c in taken] == ["plain", "mine", "typo", "broken"]
    assert all(c.problem is None for c in taken[:3])
    assert ends is not None and ends - time.monotonic() > 86000  # unroutable_timeout_s: a day


def test_a_job_nobody_can_take_fails_after_unroutable_timeout_s(tmp_path: Path) -> None:
    router = fleet(tmp_path, unroutable_timeout_s=0.05)
    first, _ = router.route(candidates(tmp_path))
    assert "nobody" not in [c.key for c in first]
    time.sleep(0.06)
    later, _ = router.route(candidates(tmp_path))
    (failed,) = [c for c in later if c.key == "nobody"]
    assert failed.problem is not None and "the backend 'wan-i2v'" in failed.problem


def test_zero_waits_forever_and_a_batch_run_waits_for_nobody(tmp_path: Path) -> None:
    router = fleet(tmp_path, unroutable_timeout_s=0)
    taken, ends = router.route(candidates(tmp_path))
    assert "nobody" not in [c.key for c in taken] and ends is None
    once = Router(router.settings, ["preview"], KNOWN, once=True)
    taken, _ = once.route(candidates(tmp_path))
    assert [c.key for c in taken] == ["plain", "mine", "nobody", "typo", "broken"]
    assert taken[2].problem is None  # the sidecar check fails it: "not loaded by this daemon"


def test_backend_auto_in_a_sidecar_is_the_shares_auto_backend(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, auto_backend="preview")  # this worker's `backend` aside
    checked = check_sidecar(settings, {"backend": "auto"}, backends={"preview": PreviewBackend},
                            default_backend="preview")
    assert checked.spec.backend == "preview"
