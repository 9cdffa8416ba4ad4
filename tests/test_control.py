"""The control files in-process: which pauses hold a worker, that a drain only ends the workers that
were running when it came, how a pause and a cancel read in words, and a job's checkpoint stopping
at an operator's cancel but never once it publishes."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from test_liveness import settings_for

from conftest import wait_for
from i2v_watcher.catalog import events
from i2v_watcher.control.cancel import CANCEL_FILE, cancel_marker, cancelled
from i2v_watcher.control.pause import Gate, pause, pause_line, pauses, resume
from i2v_watcher.control.priority import forget_priority, priorities, set_priority
from i2v_watcher.errors import JobCancelledByOperator
from i2v_watcher.job.checkpoint import Activity, Checkpoint
from i2v_watcher.job.records import JobState
from i2v_watcher.job.state import new_job_id
from i2v_watcher.ops.cancel import cancel
from i2v_watcher.service.systemd import status_line
from i2v_watcher.work.store import WorkStore


def test_a_pause_of_the_share_or_of_one_worker_holds_until_resumed(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    other = s.model_copy(update={"worker_id": "other"})
    gate, others = Gate(s), Gate(other)
    assert gate.claims_allowed() and others.claims_allowed()
    pause(s, "me")
    assert not gate.claims_allowed() and others.claims_allowed() and not gate.draining
    pause(s)
    assert not others.claims_allowed()
    assert resume(s) and not resume(s)
    assert not gate.claims_allowed() and others.claims_allowed()  # its own pause still holds
    (line,) = [pause_line(whom, r.model_dump()) for whom, r in pauses(s).items()]
    assert line.startswith("paused: worker me (by ") and "`i2v-watcher resume`" in line
    resume(s, "me")
    assert gate.claims_allowed()


def test_a_drain_ends_the_workers_running_when_it_came_not_those_started_after(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    running = Gate(s)
    pause(s, drain=True)
    after_reboot = Gate(s)
    assert not running.claims_allowed() and running.draining
    assert not after_reboot.claims_allowed() and not after_reboot.draining  # paused, and stays alive


def test_systemd_status_and_status_say_paused_or_draining(tmp_path: Path) -> None:
    assert "PAUSED" in status_line(Activity(paused=True), {"backend": "preview"}, 60.0)
    assert "PAUSED" not in status_line(Activity(), {"backend": "preview"}, 60.0)
    draining = status_line(Activity(paused=True, draining=True), {"backend": "preview"}, 60.0)
    assert "DRAINING (claims nothing new, exits once its jobs are done)" in draining
    assert "PAUSED" not in draining and "idle" not in draining

    # `status`: each pause in force, a drain said as one; a share never paused before gets its folder.
    s = settings_for(tmp_path / "fresh")
    s.work.rmdir()
    pause(s, drain=True, by="web session 0123abcd from 10.0.0.7")
    pause(s, "w1")
    lines = sorted(pause_line(whom, r.model_dump()) for whom, r in pauses(s).items())
    assert lines[0].startswith("draining: every worker (by web session 0123abcd from 10.0.0.7 on ")
    assert lines[1].startswith("paused: worker w1 (by ")


def test_a_checkpoint_stops_at_a_cancel_until_the_job_publishes(tmp_path: Path) -> None:
    folder = tmp_path / "job"
    folder.mkdir()
    checkpoint = Checkpoint()
    checkpoint.request.cancel_probe = lambda job_id: cancelled(tmp_path / job_id)
    checkpoint.activity.working_on("job", "team/fox", "claimed")
    checkpoint.check()
    cancel_marker(folder)
    checkpoint.activity.stage = "publish"  # past the commit point: too late
    checkpoint._probe_at = 0.0  # the next look, without waiting a second
    checkpoint.check()
    assert checkpoint.cancel_requested() is None
    checkpoint.activity.stage = "generate"
    checkpoint._probe_at = 0.0  # the next look, without waiting a second
    with pytest.raises(JobCancelledByOperator, match=r"cancelled by .* at ") as raised:
        checkpoint.check()
    assert raised.value.stage == "cancelled" and "retry" in raised.value.hint


def test_priority_overrides_by_name(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    set_priority(s, "team/fox", 7)
    set_priority(s, "x" * 300, -3)  # any name: the file is named by its hash
    assert priorities(s) == {"team/fox": 7, "x" * 300: -3}
    forget_priority(s, "team/fox")
    assert priorities(s) == {"x" * 300: -3}


def test_each_action_at_the_controls_is_in_the_event_log_with_who_and_when(tmp_path: Path) -> None:
    import argparse
    import json

    from i2v_watcher.catalog.events import log_path
    from i2v_watcher.ops.control import pause_command, resume_command

    s = settings_for(tmp_path)
    assert pause_command(s, argparse.Namespace(worker="me", command="pause")) == 0  # no live worker
    assert resume_command(s, argparse.Namespace(worker="me")) == 0
    assert resume_command(s, argparse.Namespace(worker="me")) == 0  # not paused: nothing happened
    lines = [json.loads(line) for line in log_path(s, f"{s.worker_id}.commands").read_text().splitlines()]
    assert [(e["kind"], e["target"]) for e in lines] == [("paused", "me"), ("resumed", "me")]
    assert all(e["by"] and e["at"] for e in lines) and lines[0]["drain"] is False


@pytest.mark.parametrize(("ending", "said"), [
    ({"kind": "published", "name": "fox", "path": "fox.json"},
     "fox: too late to cancel, it was published before the cancel was seen; it will be in the outbox"),
    ({"kind": "failed", "name": "fox", "stage": "cancelled", "report": "fox.error.json"},
     "fox: cancelled (was running; its files are in failed/)"),
], ids=["published", "cancelled"])
def test_cancel_of_a_running_job_says_how_it_ended_as_the_event_log_has_it(
        tmp_path: Path, ending: dict[str, str], said: str) -> None:
    """The job's folder is gone between two looks of the command (its worker, a thread here, acts
    within the 0.2 s between them): the event log, not the folder's absence, says how it ended."""
    owner = settings_for(tmp_path, worker_id="w0")
    owner.worker_dir.mkdir()
    job = WorkStore(owner).create(JobState(job_id=new_job_id(), worker_id="w0", stage="encoded", key="fox",
                                           inputs=["fox.png"]))

    def worker() -> None:
        wait_for(lambda: (job.dir / CANCEL_FILE).exists(), 10, what="the cancel marker")
        shutil.rmtree(job.dir)
        events.append(owner, ending["kind"], job_id=job.id,  # type: ignore[arg-type]
                      **{k: v for k, v in ending.items() if k != "kind"})

    thread = threading.Thread(target=worker)
    thread.start()
    outcome = cancel(settings_for(tmp_path), "fox", by="me")
    thread.join()
    assert outcome is not None and outcome.message.startswith(said), outcome
    assert outcome.cancelled == (ending["kind"] == "failed")
