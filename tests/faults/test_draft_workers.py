"""Draft → final with two worker processes on one share: each draft's final is queued and published
exactly once, whether a `NAME.approve` marker both workers see approves it or two `approve` commands
race for it, after one worker was killed (SIGKILL) and restarted between draft and approve; markers that
approve nothing end in failed/ with one report each, never read again."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from conftest import REPO, Folders, daemon_env, make_image, wait_for
from i2v_watcher.config.settings import load_settings
from i2v_watcher.run.drafts import kept_drafts

from .conftest import LiveDaemon, Spawn, visible
from .test_workers import worker_config

QUEUED = "draft approved: final queued"


def racing_approves(config: str, name: str) -> list[subprocess.CompletedProcess[str]]:
    """Two `approve` processes started together: both load, then race for the draft's `approved` file."""
    command = [sys.executable, "-m", "i2v_watcher", "approve", name, "--config", config]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=daemon_env(), cwd=REPO) for _ in range(2)]
    return [subprocess.CompletedProcess(run.args, run.wait(60), *run.communicate()) for run in runs]


@pytest.mark.slow
def test_two_workers_a_killed_one_and_racing_doors_make_one_final_per_draft(
        folders: Folders, spawn: Spawn, spawned: list[LiveDaemon]) -> None:
    folders.write_config(rescan_s=1.0, quality={"draft": {"num_frames": 3}, "final": {"num_frames": 5}})
    configs = [worker_config(folders, f"w{index}") for index in range(2)]
    workers = [spawn(config) for config in configs]
    (folders.inbox / "team").mkdir()
    for index, name in enumerate(("fox", "hare")):
        make_image(folders.inbox / "team" / f"{name}.png", (64, 48), seed=index)
        (folders.inbox / "team" / f"{name}.yaml").write_text(f"prompt: a {name} runs\nquality: draft\n")
    settings = load_settings(folders.config)
    wait_for(lambda: len(kept_drafts(settings)) == 2, 60, what="both drafts published and kept")
    drafts = {name: folders.metadata(f"team/{name}.draft") for name in ("fox", "hare")}

    workers[0].process.kill()  # between draft and approve: the share alone remembers the drafts
    workers[0].wait()
    workers[0] = spawn(configs[0])
    workers[0].read_until("watching")

    # The workers held still while the commands race, so that however late the second one starts on a
    # busy machine, hare's final is not published yet (its draft not yet done with) when it looks.
    for worker in workers:
        worker.process.send_signal(signal.SIGSTOP)
    hare = racing_approves(str(folders.config), "team/hare")
    for worker in workers:
        worker.resume()
    assert all(run.returncode == 0 for run in hare), [run.stderr for run in hare]
    assert sorted(bool(run.stdout.strip()) for run in hare) == [False, True]  # one queued the final,
    assert any("approved already" in run.stderr for run in hare)  # the other says so
    (folders.inbox / "team" / "fox.approve").touch()  # seen by both workers
    for name in ("fox", "hare"):
        wait_for(lambda n=name: (folders.outbox / "team" / f"{n}.json").exists(), 60, what=f"{name}'s final")
        final = folders.metadata(f"team/{name}")
        assert final["quality_level"] == "final" and final["parameters"]["num_frames"] == 5
        assert final["draft"] == {"job_id": drafts[name]["job_id"], "name": f"{name}.draft"}
        assert final["seed"] == drafts[name]["seed"]
    wait_for(lambda: not kept_drafts(settings), 30, what="the drafts' kept images removed")

    # Markers that approve nothing: a second one for fox (its final is out), one for no draft at all.
    for name in ("fox", "owl"):
        (folders.inbox / "team" / f"{name}.approve").touch()
    reported = ["team/fox.approve", "team/fox.approve.error.json", "team/owl.approve",
                "team/owl.approve.error.json"]
    wait_for(lambda: folders.files("failed") == reported and not folders.files("inbox"), 30,
             what="both markers reported")
    assert folders.report("team/owl.approve")["message"] == (
        "approve marker team/owl.approve: no draft named 'team/owl' is waiting for approval (drafts "
        "waiting: none); a draft's final may be published already, or the draft expired")
    assert "no draft named 'team/fox'" in folders.report("team/fox.approve")["message"]

    for worker in workers:
        worker.signal(signal.SIGTERM)
    assert [worker.wait(30) for worker in workers] == [0, 0]
    assert folders.files("failed") == reported  # each marker claimed and reported by one worker only
    queued = [e["draft"] for daemon in spawned for e in daemon.find(QUEUED)]
    assert queued == ["team/fox"], queued  # the marker approved once; hare by the one winning command
    assert sorted(n for n in visible(folders.outbox) if n.endswith(".json")) == [
        "team/fox.draft.json", "team/fox.json", "team/hare.draft.json", "team/hare.json"]  # one final each
    assert folders.files("work") == []

