"""The typed records read every file the daemon writes: the fixtures are files written by the version
before the records (tests/fixtures/records/generate.py), read with the model and written back to the
same JSON, key order included. Older and partial files read where the readers tolerated them; unknown
keys of a newer writer are kept; an edited file is unreadable in words, never a crash."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import Folders, cli
from i2v_watcher.catalog.index import Filters
from i2v_watcher.config.settings import Settings
from i2v_watcher.job.records import (
    MAX_RECORD_BYTES,
    FailureReport,
    JobState,
    PublishedMetadata,
    Record,
)
from i2v_watcher.job.state import STATE_FILE, Job
from i2v_watcher.ops.reports import failed_jobs, listed_files
from i2v_watcher.web.gallery import Gallery

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "records"
MODELS: dict[str, type[Record]] = {"metadata": PublishedMetadata, "report": FailureReport, "job": JobState}


def fixtures(kind: str) -> list[Path]:
    found = sorted(FIXTURES.glob(f"{kind}-*.json"))
    assert found, f"no {kind} fixtures in {FIXTURES}"
    return found


def all_fixtures() -> list[Path]:
    return [path for kind in MODELS for path in fixtures(kind)]


def model_of(path: Path) -> type[Record]:
    return MODELS[path.name.split("-", 1)[0]]


def written(record: Record) -> str:
    """The file's text as the daemon writes it (fs.atomic.write_json_atomic)."""
    return json.dumps(record.to_json(), indent=2) + "\n"


@pytest.mark.parametrize("path", all_fixtures(), ids=lambda p: p.name)
def test_every_file_of_the_version_before_reads_and_writes_back_unchanged(path: Path) -> None:
    record = model_of(path).read(path, MAX_RECORD_BYTES)
    assert written(record) == path.read_text()  # same keys, values and order: byte for byte


def test_the_records_hold_what_the_files_say() -> None:
    presets = PublishedMetadata.read(FIXTURES / "metadata-presets.json", MAX_RECORD_BYTES)
    assert presets.presets == ["square-1080", "gif-preview"] and presets.input is not None
    assert presets.input.path == "sub/presets.png" and presets.files[-1] == "sub/presets.json"
    assert set(presets.timings_s) == {"load", "generate", "postprocess", "publish"}
    taken = PublishedMetadata.read(FIXTURES / "metadata-taken-over.json", MAX_RECORD_BYTES)
    assert [t["from"] for t in taken.takeovers] == ["w1"] and taken.worker_id == "w2"
    sidecar = FailureReport.read(FIXTURES / "report-sidecar.error.json", MAX_RECORD_BYTES)
    assert sidecar.stage == "sidecar" and sidecar.problems is not None and len(sidecar.problems) == 3
    assert FailureReport.read(FIXTURES / "report-image.error.json", MAX_RECORD_BYTES).problems is None
    generated = JobState.read(FIXTURES / "job-generated.json", MAX_RECORD_BYTES)
    assert generated.metadata is not None and generated.metadata.frames_fps == 8.0
    assert generated.metadata.outputs is None and generated.metadata.postprocess is None
    publishing = JobState.read(FIXTURES / "job-publishing.json", MAX_RECORD_BYTES)
    assert publishing.metadata is not None and publishing.metadata.frames_fps is None
    assert [o.suffix for o in publishing.metadata.outputs or []] == [".mp4", ".webp-preview.webp", ".jpg"]
    failing = JobState.read(FIXTURES / "job-failing.json", MAX_RECORD_BYTES)
    assert failing.metadata is None and failing.error is not None and failing.error.stage == "load"


@pytest.mark.parametrize("path", all_fixtures(), ids=lambda p: p.name)
def test_keys_of_a_newer_writer_are_kept(path: Path) -> None:
    data = json.loads(path.read_text())
    data["from_a_newer_version"] = {"x": [1, 2]}
    for nested in ("input", "postprocess", "metadata", "error"):
        if isinstance(data.get(nested), dict) and data[nested]:
            data[nested]["also_new"] = True
    for takeover in data.get("takeovers", []):
        takeover["also_new"] = 1
    assert model_of(path).model_validate(data).to_json() == data


def test_a_job_state_is_loaded_and_saved_unchanged(tmp_path: Path) -> None:
    for path in fixtures("job"):
        folder = tmp_path / path.stem
        folder.mkdir()
        (folder / STATE_FILE).write_bytes(path.read_bytes())
        job = Job.load(folder)
        job.save()
        assert (folder / STATE_FILE).read_text() == path.read_text()


def test_older_and_partial_files_read_as_their_readers_allowed() -> None:
    # The gallery needed a job id, a name and the files; everything else may be missing.
    partial = PublishedMetadata.model_validate({"job_id": "j", "name": "x", "files": ["x.mp4", 7]})
    assert partial.files == ["x.mp4"] and partial.presets == [] and partial.input is None
    assert partial.prompt == "" and partial.timings_s == {}
    # A report with any key missing: watch reads left_in_inbox alone, status shows what there is.
    report = FailureReport.model_validate({"left_in_inbox": {"evil.png": "link"}})
    assert report.left_in_inbox == {"evil.png": "link"} and report.stage is None and report.files is None
    assert report.to_json() == {k: None for k in ("job_id", "input", "files", "stage", "error_class",
                                                  "message", "hint", "traceback", "attempts", "worker_id",
                                                  "claimed_at", "failed_at")} | {
        "left_in_inbox": {"evil.png": "link"}}
    # A job state before generation holds `{}` as its metadata, and writes it so.
    state = json.loads((FIXTURES / "job-failing.json").read_text())
    for key in ("takeovers", "left_in_place", "wanted_name", "encode_dir", "deaths"):
        state.pop(key)
    older = JobState.model_validate(state)
    assert older.metadata is None and older.takeovers == [] and older.to_json()["metadata"] == {}


@pytest.mark.parametrize("edit", [{"message": 5}, {"files": "x.png"}, {"left_in_inbox": ["a"]},
                                  {"attempts": "many"}])
def test_an_edited_report_is_unreadable_in_words(tmp_path: Path, edit: dict[str, Any]) -> None:
    data = json.loads((FIXTURES / "report-image.error.json").read_text()) | edit
    path = tmp_path / "x.error.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"^invalid failure report: ") as caught:
        FailureReport.read(path, MAX_RECORD_BYTES)
    assert "\n" not in str(caught.value)
    assert listed_files(path) == []


def test_status_and_the_gallery_show_an_edited_file_as_unreadable_or_none(folders: Folders) -> None:
    folders.failed.mkdir()
    (folders.failed / "good.error.json").write_bytes((FIXTURES / "report-image.error.json").read_bytes())
    planted = json.loads((FIXTURES / "report-sidecar.error.json").read_text()) | {"problems": "all"}
    (folders.failed / "edited.error.json").write_text(json.dumps(planted))
    entries = {e["name"]: e for e in failed_jobs(Settings(**folders.settings), lambda _: None)}
    assert entries["good"]["stage"] == "load" and entries["good"]["files"] == ["image.png"]
    assert entries["edited"]["stage"] == "unreadable"
    assert entries["edited"]["message"].startswith("invalid failure report: problems")
    result = cli("status", "--json", "--config", str(folders.config), check=True)
    assert {f["name"]: f["stage"] for f in json.loads(result.stdout)["failed"]} == {
        "edited": "unreadable", "good": "load"}

    # The gallery shows a hand-edited clip as well as it can: a key it can do without that holds
    # something else reads as missing; a file without a job id, name or files is no clip.
    folders.outbox.mkdir()
    (folders.outbox / "plain.json").write_bytes((FIXTURES / "metadata-plain.json").read_bytes())
    edited = json.loads((FIXTURES / "metadata-presets.json").read_text())
    edited |= {"seed": "lucky", "postprocess": {"presets": "all"}, "published_at": "2030"}
    (folders.outbox / "presets.json").write_text(json.dumps(edited))
    (folders.outbox / "nameless.json").write_text(json.dumps({**edited, "name": 5}))
    clips = Gallery(Settings(**folders.settings)).page(Filters(), 1, 100)[0]
    assert [c.name for c in clips] == ["presets", "plain"]
    assert clips[0].meta.seed is None and clips[0].presets == [] and clips[0].prompt == "a windy field"
    with pytest.raises(ValueError, match=r"^invalid metadata: seed"):
        PublishedMetadata.read(folders.outbox / "presets.json", MAX_RECORD_BYTES)  # strict elsewhere


def shape(value: Any) -> Any:
    """The structure of a JSON value: the keys in order, the lengths of lists, the types of scalars."""
    if isinstance(value, dict):
        return [(key, shape(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [shape(item) for item in value]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return "number" if number else type(value).__name__


def test_the_daemon_still_writes_every_file_as_the_version_before(tmp_path: Path) -> None:
    """Real jobs through a real daemon with the code of now: every file has the keys, order and types
    of the fixtures (the values differ: ids, times, paths)."""
    spec = importlib.util.spec_from_file_location("records_fixtures", FIXTURES / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    names = generate.write_all(tmp_path)
    assert names == sorted(p.name for p in all_fixtures())
    for name in names:
        now, before = (json.loads(p.read_text()) for p in (tmp_path / name, FIXTURES / name))
        assert shape(now) == shape(before), name
