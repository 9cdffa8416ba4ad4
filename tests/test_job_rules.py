"""One rule set for presets and overrides (media/chains.py), run by one job check (run/check.py): the
daemon and `submit` report the same problems for the same sidecar, and a job's chains are built once,
by that check, then handed from stage to stage."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from conftest import Daemon, Folders, cli, make_image
from i2v_watcher.backends.preview import PreviewBackend
from i2v_watcher.config.settings import Preset, Settings
from i2v_watcher.fs.atomic import read_json
from i2v_watcher.inbox.watch import Candidate
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.job.state import Job
from i2v_watcher.media.ffmpeg import find_ffmpeg
from i2v_watcher.run.pipeline import Pipeline
from i2v_watcher.service.bootstrap import prepare_folders
from i2v_watcher.steps import Step
from i2v_watcher.work.claim import claim
from i2v_watcher.work.store import WorkStore

Start = Callable[..., Daemon]

# One of each kind of mistake: a misspelt preset, an override out of range, one not on the allow-list,
# one smuggling filter syntax, a value out of range and an unknown key.
BAD = {"postprocess": ["archive", "gif-previews"],
       "postprocess_overrides": {"encode": {"crf": 99, "codec": "libx265"}, "scale_pad": {"color": "a;b"}},
       "num_frames": 0, "colour": "red"}
EXPECTED = {
    "num_frames must be from 1 to 512 (got 0)",
    "colour: unknown key",
    "unknown post-processing preset 'gif-previews', did you mean gif-preview?",
    "postprocess_overrides: encode.codec cannot be overridden",
    "postprocess_overrides.encode.crf must be from 0 to 63 (got 99)",
    "postprocess_overrides: scale_pad.color = 'a;b' is refused: no paths, filters or ffmpeg options in a "
    "sidecar",
}


def test_the_daemon_and_submit_report_the_same_problems(folders: Folders, tmp_path: Path,
                                                        start: Start) -> None:
    sets = [item for key, value in BAD.items()
            for item in ("--set", f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}")]
    refused = cli("submit", str(make_image(tmp_path / "a.png")), *sets, "--config", str(folders.config))
    assert refused.returncode == 2 and folders.files("inbox") == [], refused.stderr
    by_submit = [line[len("  - "):] for line in refused.stderr.splitlines() if line.startswith("  - ")]

    make_image(folders.inbox / "bad.png")
    (folders.inbox / "bad.yaml").write_text(yaml.safe_dump(BAD))
    start(folders.config, "--once").wait()
    by_daemon = folders.report("bad")["problems"]

    assert sorted(by_submit) == sorted(by_daemon)
    assert set(by_daemon) == EXPECTED


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(**{n: str(tmp_path / n) for n in ("inbox", "outbox", "failed", "done", "work")},
                 create_inbox=True, worker_id="w", defaults={"num_frames": 3, "resolution": "64p"})
    prepare_folders(s)
    return s


def chain_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every time a preset's steps are built (once per preset in a build of a job's chains)."""
    built: list[str] = []
    real = Preset.chain

    def counted(preset: Preset) -> list[Step]:
        built.append(str(preset.steps[-1]["step"]))
        return real(preset)

    monkeypatch.setattr(Preset, "chain", counted)
    return built


def job_with_sidecar(settings: Settings, sidecar: dict[str, object]) -> Job:
    image = make_image(settings.inbox / "a.png")
    (settings.inbox / "a.yaml").write_text(yaml.safe_dump(sidecar))
    candidate = Candidate(key="a", image=image, sidecar=settings.inbox / "a.yaml",
                          mtime=image.stat().st_mtime)
    job = claim(settings, WorkStore(settings), candidate)
    assert job is not None
    return job


def pipeline(settings: Settings) -> Pipeline:
    return Pipeline(settings, {"preview": PreviewBackend(settings)}, find_ffmpeg(None)[0], Checkpoint(),
                    "preview")


@pytest.mark.parametrize("stages", [1, 2], ids=["one-pipeline", "generate-then-finish"])
def test_a_jobs_chains_are_built_once(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                      stages: int) -> None:
    job = job_with_sidecar(settings, {"postprocess": ["archive", "gif-preview"],
                                      "postprocess_overrides": {"encode": {"crf": 30}}})
    built = chain_builds(monkeypatch)
    if stages == 1:
        assert pipeline(settings).run(job) == "published"
    else:  # the pipelined daemon: one Pipeline generates, another encodes and publishes
        assert pipeline(settings).run(job, hand_over=True) == "generated"
        assert pipeline(settings).run(job) == "published"
    assert sorted(built) == ["encode", "gif"]  # one build of the job's two presets, for every stage
    metadata = read_json(settings.outbox / "a.json")
    assert metadata["postprocess"]["outputs"][0]["crf"] == 30  # the chains built then are the ones encoded


def test_a_job_resumed_after_a_restart_builds_its_chains_once_more(settings: Settings,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    job = job_with_sidecar(settings, {"postprocess": "archive"})
    assert pipeline(settings).run(job, hand_over=True) == "generated"
    built = chain_builds(monkeypatch)
    resumed = Job.load(job.dir)  # a new process: the frames come from the scratch copy, the chains anew
    assert pipeline(settings).run(resumed) == "published"
    assert built == ["encode"]
