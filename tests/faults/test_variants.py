"""Variants: `variants: N` makes N clips of one image with seeds seed, seed+1, ...; `keep: all` publishes
each (the first under the job's name, the others as NAME.v2, NAME.v3, ..., each run as a job of its own),
`keep: best` the one the quality gate scores best, with every variant's scores in its metadata."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import Daemon, Folders, make_image
from i2v_watcher.job.spec import JobSpec
from i2v_watcher.run.drafts import DraftRecord, final_sidecar


def published(folders: Folders) -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in folders.outbox.rglob("*.json")}


@pytest.mark.slow
def test_keep_all_publishes_every_variant_as_its_own_job_and_keep_best_the_best_one(
        folders: Folders, start: Any) -> None:
    make_image(folders.inbox / "team" / "fox.png", seed=1)
    (folders.inbox / "team" / "fox.yaml").write_text("variants: 3\nseed: 40\nprompt: a fox\n")
    make_image(folders.inbox / "owl.png", seed=2)
    (folders.inbox / "owl.yaml").write_text("variants: 3\nkeep: best\nseed: 70\n")
    daemon: Daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=120) == 0, daemon.lines[-20:]
    clips = published(folders)

    assert sorted(clips) == ["fox", "fox.v2", "fox.v3", "owl"]
    # keep: all: seeds 40, 41, 42, each told which variant of which job it is.
    first = clips["fox"]
    assert [clips[name]["seed"] for name in ("fox", "fox.v2", "fox.v3")] == [40, 41, 42]
    assert first["variant"] == {"of": first["job_id"], "name": "team/fox", "index": 1, "count": 3}
    assert clips["fox.v3"]["variant"] == {"of": first["job_id"], "name": "team/fox", "index": 3, "count": 3}
    assert clips["fox.v2"]["prompt"] == "a fox" and "variants" not in clips["fox.v2"]["requested"]
    # A variant's approval is that clip's: its seed, one final, no variants again.
    final = final_sidecar_of(clips["fox.v2"])
    assert final["seed"] == 41 and not {"variants", "keep", "variant"} & final.keys()
    JobSpec.model_validate(final)  # a sidecar the daemon takes
    # keep: best: one clip, three attempts (seeds 70-72) judged, the published one the best of them.
    owl = clips["owl"]["quality"]
    assert [attempt["seed"] for attempt in owl["attempts"]] == [70, 71, 72]
    ranks = [(len(a["symptoms"]), a["scores"]["drift"]) for a in owl["attempts"]]
    assert clips["owl"]["seed"] == owl["attempts"][ranks.index(min(ranks))]["seed"]
    assert "variant" not in clips["owl"]
    assert not list(folders.inbox.rglob("*.png")) and not list(folders.failed.rglob("*"))


def final_sidecar_of(metadata: dict[str, Any]) -> dict[str, Any]:
    record = DraftRecord(job_id=metadata["job_id"], key="team/fox.v2", image="fox.v2.png", name="fox.v2",
                         seed=metadata["seed"], requested=metadata["requested"], files=[])
    return final_sidecar(record)
