"""Draft → final: a draft is published under `draft_name_template`, its image and request are kept on
the share, and approving it (the `approve` command, or a `NAME.approve` marker in the inbox) queues its
final exactly once, across a daemon restart between draft and approve."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from conftest import Daemon, Folders, cli, make_image, write_toml
from i2v_watcher.config.settings import Settings, load_settings
from i2v_watcher.errors import StartupError
from i2v_watcher.job.records import JobState
from i2v_watcher.job.spec import parse_sidecar
from i2v_watcher.job.state import Job
from i2v_watcher.run.drafts import (
    APPROVED,
    RECORD,
    Approval,
    ApproveRefused,
    DraftRecord,
    approve,
    drafts_root,
    expire_drafts,
    final_sidecar,
)
from i2v_watcher.run.markers import MarkerRefused, approve_marker
from i2v_watcher.run.publish import wanted_name
from i2v_watcher.web.app import create_app

Start = Callable[..., Daemon]
DRAFT_ID = "20261207T120000Z-0000a001"


def settings(tmp_path: Path, **changes: Any) -> Settings:
    config = tmp_path / "c.toml"
    folders = {name: str(tmp_path / name) for name in ("inbox", "outbox", "failed", "done", "work")}
    write_toml(config, {**folders, **changes})
    for name in folders:
        (tmp_path / name).mkdir(exist_ok=True)
    return load_settings(config)


def a_job(tmp_path: Path, key: str) -> Job:
    state = JobState(job_id=DRAFT_ID, worker_id="testhost", stage="claimed", key=key, inputs=["fox.png"],
                     image="fox.png")
    return Job(tmp_path / "job", state)


def test_a_draft_takes_the_draft_name_and_its_final_the_plain_one(tmp_path: Path) -> None:
    chosen = settings(tmp_path, output_template="{stem}-{seed}")
    job = a_job(tmp_path, "team/fox")
    fields = {"seed": 7, "preset": "archive", "backend": "preview"}
    assert wanted_name(chosen, job, quality="draft", output_name=None, fields=fields) == "fox-7.draft"
    assert wanted_name(chosen, job, quality="final", output_name=None, fields=fields) == "fox-7"
    assert wanted_name(chosen, job, quality="draft", output_name="clip", fields=fields) == "clip.draft"
    other = settings(tmp_path, draft_name_template="preview-{name}")
    assert wanted_name(other, job, quality="draft", output_name=None, fields=fields) == "preview-fox"


@pytest.mark.parametrize("template", ["{name}", "draft", "{name}-{seed}", "{name!r}.draft", "../{name}"])
def test_a_draft_name_template_that_cannot_name_a_draft_apart_is_refused(tmp_path: Path,
                                                                          template: str) -> None:
    with pytest.raises(StartupError, match="draft_name_template"):
        settings(tmp_path, draft_name_template=template)


def kept_draft(chosen: Settings, requested: dict[str, Any], key: str = "team/fox") -> DraftRecord:
    folder = drafts_root(chosen) / DRAFT_ID
    folder.mkdir(parents=True)
    make_image(folder / "image.png", (64, 48))
    record = DraftRecord(job_id=DRAFT_ID, key=key, name="fox.draft", files=["team/fox.draft.json"],
                         requested=requested, seed=1234, image="image.png")
    (folder / RECORD).write_text(record.model_dump_json())
    return record


def test_the_final_asks_for_what_the_draft_asked_with_its_seed_never_what_its_level_set(
        tmp_path: Path) -> None:
    chosen = settings(tmp_path)
    draft = kept_draft(chosen, {"prompt": "a fox", "quality": "draft", "fps": 12.0})
    sidecar = final_sidecar(draft)
    assert sidecar == {"prompt": "a fox", "quality": "final", "fps": 12.0, "seed": 1234,
                       "draft": {"job_id": DRAFT_ID, "name": "fox.draft"}}
    spec = parse_sidecar(yaml.safe_dump(sidecar).encode(), max_bytes=4096)  # a sidecar the daemon takes
    assert spec.quality == "final" and spec.seed == 1234 and spec.steps is None and spec.num_frames is None


def test_two_doors_approving_at_once_queue_one_final(tmp_path: Path) -> None:
    chosen = settings(tmp_path)
    kept_draft(chosen, {"prompt": "a fox", "quality": "draft"})
    results: list[Approval] = []
    gate = threading.Barrier(4)

    def door() -> None:
        gate.wait()
        results.append(approve(chosen, "team/fox"))

    threads = [threading.Thread(target=door) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.outcome for r in results) == ["already", "already", "already", "queued"]
    assert approve(chosen, "team/fox.draft").outcome == "already"  # as `status` lists it among done
    assert sorted(p.name for p in (chosen.inbox / "team").iterdir()) == ["fox.png", "fox.yaml"]
    assert (drafts_root(chosen) / DRAFT_ID / APPROVED).is_file()
    with pytest.raises(ApproveRefused, match="no draft named 'team/hare'"):
        approve(chosen, "team/hare")


def test_a_marker_waits_for_a_draft_still_on_its_way_and_is_refused_for_none(tmp_path: Path) -> None:
    chosen = settings(tmp_path)
    (chosen.inbox / "team").mkdir()
    marker = chosen.inbox / "team" / "fox.approve"
    marker.touch()
    make_image(chosen.inbox / "team" / "fox.png")  # the draft itself, not taken yet
    assert approve_marker(chosen, marker) is False and marker.exists()
    (chosen.inbox / "team" / "fox.png").unlink()
    kept_draft(chosen, {"prompt": "a hare"}, key="team/hare")
    with pytest.raises(MarkerRefused, match=r"^approve marker team/fox.approve: no draft named 'team/fox' "
                       r"is waiting for approval \(drafts waiting: team/hare\)"):
        approve_marker(chosen, marker)  # no draft coming: refused, the marker left for its report
    assert marker.exists()


def test_a_marker_that_came_after_the_approval_is_refused_one_that_was_there_is_removed(
        tmp_path: Path) -> None:
    chosen = settings(tmp_path)
    kept_draft(chosen, {"prompt": "a fox"})
    (chosen.inbox / "team").mkdir()
    raced = chosen.inbox / "team" / "fox.approve"
    raced.touch()  # there before the approval (another worker's, or a restart's): its request is met
    time.sleep(0.05)  # the share's clock ticks between the two
    assert approve(chosen, "team/fox").outcome == "queued"
    assert approve_marker(chosen, raced) is True and not raced.exists()
    time.sleep(0.05)
    late = chosen.inbox / "team" / "fox.approve"
    late.touch()  # a second approval
    with pytest.raises(MarkerRefused, match=r"the draft 'team/fox' \(fox.draft\) was approved already at "
                       r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: .*this marker came after that and queued nothing"):
        approve_marker(chosen, late)
    with pytest.raises(ApproveRefused, match=r"\(drafts waiting: none\)"):  # approved: no longer waiting
        approve(chosen, "team/hare")


def test_an_unapproved_draft_expires_after_draft_expiry_days(tmp_path: Path) -> None:
    chosen = settings(tmp_path, draft_expiry_days=1)
    kept_draft(chosen, {"prompt": "a fox"})
    assert expire_drafts(chosen) == 0 and approve(chosen, "team/fox").outcome == "queued"
    record = drafts_root(chosen) / DRAFT_ID / RECORD
    os.utime(record, (time.time() - 2 * 86400,) * 2)  # published two days ago
    assert expire_drafts(chosen) == 1 and not (drafts_root(chosen) / DRAFT_ID).exists()
    with pytest.raises(ApproveRefused, match="expired"):
        approve(chosen, "team/fox")


def test_a_draft_approved_through_the_cli_and_a_marker_after_a_restart_makes_one_final_each(
        folders: Folders, start: Start) -> None:
    folders.write_config(keep_drafts=False, quality={"draft": {"num_frames": 4}, "final": {"num_frames": 6}})
    (folders.inbox / "team").mkdir()
    for name in ("fox", "hare"):
        make_image(folders.inbox / "team" / f"{name}.png", (64, 48), seed=len(name))
        (folders.inbox / "team" / f"{name}.yaml").write_text("prompt: a fox runs\nquality: draft\n")
    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=120) == 0, daemon.log
    drafts = {name: folders.metadata(f"team/{name}.draft") for name in ("fox", "hare")}
    assert drafts["fox"]["quality_level"] == "draft" and drafts["fox"]["parameters"]["num_frames"] == 4
    assert (folders.outbox / "team" / "fox.draft.mp4").is_file()

    # The daemon is gone: the CLI approves from the share alone; a second approve only says so.
    config = str(folders.config)
    first = cli("approve", "team/fox", "--config", config)
    assert first.returncode == 0 and first.stdout.strip().endswith("team/fox.png"), first.stderr
    second = cli("approve", "team/fox", "--config", config)
    assert second.returncode == 0 and "approved already" in second.stderr and not second.stdout
    (folders.inbox / "team" / "hare.approve").touch()  # the share's door, for the other draft
    (folders.inbox / "team" / "fox.approve").touch()  # fox again: no second final, a report

    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=120) == 3, daemon.log  # 3: the fox marker failed
    for name in ("fox", "hare"):
        final, drafted = folders.metadata(f"team/{name}"), f"team/{name}.draft"
        assert final["quality_level"] == "final" and final["parameters"]["num_frames"] == 6
        assert final["seed"] == drafts[name]["seed"]
        assert final["draft"] == {"job_id": drafts[name]["job_id"], "name": f"{name}.draft"}
        assert final["requested"]["prompt"] == "a fox runs"
        assert not (folders.outbox / f"{drafted}.mp4").exists()  # keep_drafts = false
    published = folders.files("outbox")
    assert not [f for f in published if "fox-1" in f or "hare-1" in f], published  # one final each
    assert not list((folders.inbox / "team").iterdir())  # markers acted on once and removed
    assert folders.files("failed") == ["team/fox.approve", "team/fox.approve.error.json"]
    # Looked at while fox's final ran, or after it was published: either way it says why.
    said = folders.report("team/fox.approve")["message"]
    assert re.match(r"approve marker team/fox.approve: (the draft 'team/fox' \(fox.draft\) was approved "
                    r"already|no draft named 'team/fox' is waiting)", said), said
    with pytest.raises(ApproveRefused, match="no draft named 'team/fox'"):  # its final is published
        approve(load_settings(folders.config), "team/fox")


def test_the_dashboards_approve_button_is_gated_like_retry_and_approves_once(tmp_path: Path) -> None:
    chosen = settings(tmp_path, web_allow_retry=True, web_token="t" * 24)
    kept_draft(chosen, {"prompt": "a fox", "quality": "draft"})
    (chosen.outbox / "team").mkdir()
    (chosen.outbox / "team" / "fox.draft.json").write_text(json.dumps({
        "job_id": DRAFT_ID, "name": "fox.draft", "files": ["team/fox.draft.json"], "quality_level": "draft",
        "input": {"path": "team/fox.png"}}))
    web = TestClient(create_app(chosen), base_url="http://127.0.0.1:8080")
    assert "Sign in to approve" in web.get("/gallery").text  # the draft's card offers it
    signed = {"Authorization": "Bearer " + "t" * 24, "Accept": "application/json"}
    assert web.post("/gallery/approve", data={"name": "team/fox"},
                    headers={"Accept": "application/json"}).status_code in (401, 403)
    assert not (chosen.inbox / "team").exists()
    first = web.post("/gallery/approve", data={"name": "team/fox"}, headers=signed)
    assert first.status_code == 200 and first.json()["outcome"] == "queued"
    again = web.post("/gallery/approve", data={"name": "team/fox"}, headers=signed)
    assert again.json()["outcome"] == "already" and "approved already" in again.json()["message"]
    assert sorted(p.name for p in (chosen.inbox / "team").iterdir()) == ["fox.png", "fox.yaml"]
    missing = web.post("/gallery/approve", data={"name": "team/hare"}, headers=signed)
    assert missing.status_code == 404 and "no draft named 'team/hare'" in missing.json()["error"]
    assert web.post("/login", data={"token": "t" * 24}, follow_redirects=False).status_code == 303
    assert '<input type="hidden" name="name" value="team/fox">' in web.get("/gallery").text  # signed in
