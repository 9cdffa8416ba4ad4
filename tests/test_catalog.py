"""The catalog: the event log that workers append to on the share, and the local SQLite index of the
published clips that the dashboard reads instead of walking the outbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_pipeline import job_for, pipeline, settings

from i2v_watcher.catalog import events
from i2v_watcher.catalog import index as index_module
from i2v_watcher.catalog.index import Catalog, Filters, default_path
from i2v_watcher.config.settings import Settings
from i2v_watcher.ops.retry import retry
from i2v_watcher.ops.status import snapshot
from i2v_watcher.work.store import WorkStore

__all__ = ["settings"]  # the fixture, shared with test_pipeline
CLIPS = 300


def publish(settings: Settings, i: int, *, prompt: str | None = None, folder: str = "",
            event: bool = False) -> str:
    """A clip's metadata in the outbox as the daemon writes it (the video itself is not needed)."""
    name = f"clip{i:04d}"
    rel = f"{folder}/{name}.json" if folder else f"{name}.json"
    (settings.outbox / rel).parent.mkdir(parents=True, exist_ok=True)
    (settings.outbox / rel).write_text(json.dumps({
        "job_id": f"job{i}", "name": name, "prompt": prompt or f"a {('cat', 'fox')[i % 3 == 0]} number {i}",
        "published_at": f"2026-11-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "backend": "svd" if i % 2 else "ltx-video", "model": f"model-{i % 5}", "worker_id": f"host{i % 3}",
        "quality": {"verdict": ("pass", "warn", "fail")[i % 3]} if i % 4 else None,
        "files": [rel[:-5] + ".mp4", rel]}))
    if event:
        assert events.append(settings, "published", job_id=f"job{i}", name=name, path=rel)
    return rel


@pytest.fixture
def catalog(settings: Settings, tmp_path: Path) -> Catalog:
    for i in range(CLIPS):
        publish(settings, i, folder=f"team{i % 4}" if i % 2 else "")
    (settings.outbox / "notes.json").write_text('{"not": "a clip"}')
    (settings.outbox / "broken.json").write_text("{")
    found = Catalog(settings, tmp_path / "cache" / "catalog.sqlite")
    found.refresh()
    return found


EVERY = Filters()


def names(catalog: Catalog, filters: Filters = EVERY, limit: int = 10_000) -> list[str]:
    return [entry.meta.name for entry in catalog.page(filters, 0, limit)]


def test_the_index_built_from_a_walk_holds_every_clip_as_published(settings: Settings,
                                                                   catalog: Catalog) -> None:
    assert not catalog.indexing and Catalog(settings, catalog.path.with_name("new.sqlite")).indexing
    newest_first = [f"clip{i:04d}" for i in reversed(range(CLIPS))]
    assert names(catalog) == newest_first and catalog.count() == CLIPS
    assert [e.meta.name for e in catalog.page(Filters(), 24, 24)] == newest_first[24:48]
    newest = catalog.page(limit=1)[0]
    on_disk = json.loads((settings.outbox / newest.rel).read_text())
    assert newest.rel == "team3/clip0299.json" and newest.meta.model_dump(mode="json", include=set(on_disk)) \
        == on_disk
    judged = [i for i in range(CLIPS) if i % 4]
    assert catalog.count(Filters(verdict="fail")) == sum(1 for i in judged if i % 3 == 2)
    assert catalog.count(Filters(backend="svd", worker="host1")) == sum(
        1 for i in range(CLIPS) if i % 2 and i % 3 == 1)
    assert catalog.count(Filters(model="model-2", since="2026-11-01T00:02", until="2026-11-01T00:04")) == 24
    tally = catalog.tally()
    assert set(tally) == {"svd", "ltx-video"}
    assert sum(v["pass"] for v, _ in tally.values()) == sum(1 for i in judged if i % 3 == 0)


def test_search_finds_clips_by_the_words_of_their_prompt(settings: Settings, catalog: Catalog) -> None:
    publish(settings, 9001, prompt="Élan: a red kite over the dunes", event=True)
    catalog.follow()
    assert names(catalog, Filters(query="kite DUNE")) == ["clip9001"]  # any case, a word's beginning
    assert names(catalog, Filters(query="elan")) == ["clip9001"]  # without its accent
    assert catalog.count(Filters(query="fox number")) == CLIPS // 3
    assert names(catalog, Filters(query="clip0042")) == ["clip0042"]
    assert catalog.count(Filters(query='" * ( -')) == CLIPS + 1  # punctuation only: no filter
    assert catalog.count(Filters(query='fox" OR NEAR(cat')) == 0  # words, never FTS5's syntax


def test_events_keep_it_current_without_a_walk(settings: Settings, catalog: Catalog) -> None:
    rel = publish(settings, 5000, folder="late", event=True)
    publish(settings, 5001)  # put there by hand, without an event: seen at the next reconciling walk
    catalog.refresh()
    assert names(catalog, limit=1) == ["clip5000"] and catalog.count() == CLIPS + 1
    assert catalog.page(Filters(query="number 5000"))[0].rel == rel
    assert catalog.follow() == 0  # the publish's line was read once, and not again
    catalog.reconcile()
    assert catalog.count() == CLIPS + 2

    # A restarted reader picks up where it stopped: the logs' offsets are kept in the index.
    catalog.close()
    again = Catalog(settings, catalog.path)
    publish(settings, 5002, event=True)
    assert again.follow() == 1 and again.count() == CLIPS + 3
    (settings.outbox / rel).unlink()  # a draft's clip, once its final is published (run.drafts)
    assert events.append(settings, "removed", path=rel)
    again.refresh()
    assert again.count() == CLIPS + 2 and "clip5000" not in names(again)


def test_a_clip_removed_by_hand_disappears_at_the_reconciling_walk(settings: Settings,
                                                                   catalog: Catalog) -> None:
    (settings.outbox / "clip0000.json").unlink()
    catalog.refresh()  # between walks: the index does not look at the share
    assert "clip0000" in names(catalog)
    catalog.reconcile()
    assert "clip0000" not in names(catalog) and catalog.count() == CLIPS - 1
    settings.outbox.rename(settings.outbox.with_name("gone"))  # the share unmounted: nothing forgotten
    catalog.reconcile()
    assert catalog.count() == CLIPS - 1


def test_a_bad_line_in_a_log_is_skipped_not_fatal(settings: Settings, catalog: Catalog) -> None:
    log = events.log_path(settings, "hand")
    log.parent.mkdir(exist_ok=True)
    log.write_bytes(b'{"kind": "published", "path": "../../etc/passwd.json"}\nnot json\n[1, 2]\n\xff\xfe\n')
    with log.open("ab") as file:
        file.write(json.dumps({"kind": "published", "path": publish(settings, 7000)}).encode() + b"\n")
        file.write(b'{"kind": "published", "path": "')  # a writer's torn line: left until it is whole
    catalog.follow()
    assert names(catalog, limit=1) == ["clip7000"]
    with log.open("ab") as file:
        file.write(publish(settings, 7001).encode() + b'"}\n')
    assert catalog.follow() == 1 and names(catalog, limit=1) == ["clip7001"]


def test_an_unwritable_log_never_fails_the_job(settings: Settings) -> None:
    events.events_dir(settings).write_text("a file where the logs' folder belongs")
    assert events.append(settings, "published", path="x.json") is False


def test_publish_fail_and_retry_are_logged(settings: Settings, tmp_path: Path) -> None:
    assert pipeline(settings).run(job_for(settings, "ok")) == "published"
    broken = job_for(settings, "typo")
    (broken.input_dir / "typo.yaml").write_text("num_frame: 4\n")
    broken.advance("claimed", inputs=["typo.png", "typo.yaml"], sidecar="typo.yaml")
    assert pipeline(settings).run(broken) == "failed"
    retry(settings, settings.failed / "typo.error.json")
    logs = [events.log_path(settings), events.log_path(settings, "w.commands")]  # a command's own log
    lines = [json.loads(line) for path in logs for line in path.read_text().splitlines()]
    assert [(e["kind"], e["name"], e["worker"]) for e in lines] == [
        ("published", "ok", "w"), ("failed", "typo", "w"), ("retried", "typo", "w")]
    assert lines[0]["path"] == "ok.json" and lines[1]["report"] == lines[2]["report"] == "typo.error.json"
    assert sorted(p.name for p in events.logs(settings)) == ["w.commands.jsonl", "w.jsonl"]
    catalog = Catalog(settings, tmp_path / "catalog.sqlite")
    catalog.refresh()
    assert names(catalog) == ["ok"]


def test_the_index_is_local_and_one_per_outbox(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    here = default_path(settings)
    there = default_path(settings.model_copy(update={"outbox": tmp_path / "other"}))
    assert here.parent == tmp_path / "xdg" / "i2v-watcher" and here != there
    assert default_path(settings.model_copy(update={"catalog_path": tmp_path / "c.db"})) == tmp_path / "c.db"


def test_a_takeover_is_logged(settings: Settings) -> None:
    job = job_for(settings)
    other = settings.work / "other" / job.id
    other.parent.mkdir()
    job.dir.rename(other)
    assert WorkStore(settings).take(other, "stale") is not None
    line = json.loads(events.log_path(settings).read_text())
    assert (line["kind"], line["job_id"], line["previous"]) == ("takeover", job.id, "other")
    assert line["worker"] == "w" and line["reason"] == "stale"


def test_status_lists_the_done_jobs_from_the_index(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for i in range(3):
        publish(settings, i, folder="team")
    first = snapshot(settings)
    assert first.done == ["team/clip0000", "team/clip0001", "team/clip0002"] and first.counts.done == 3
    assert default_path(settings).exists() and first.warnings == []
    publish(settings, 3, event=True)  # a worker's publish: in the next status at once
    (settings.outbox / "team" / "clip0000.json").unlink()  # by hand: at the next reconciling walk
    assert snapshot(settings).done == ["team/clip0000", "team/clip0001", "team/clip0002", "clip0003"]

    # A cache folder that cannot be written: the outbox's names are walked, and status says why.
    monkeypatch.setenv("XDG_CACHE_HOME", str(settings.outbox / "team" / "clip0001.json"))
    fallback = snapshot(settings)
    assert fallback.done == ["team/clip0001", "team/clip0002", "clip0003"]
    assert len(fallback.warnings) == 1 and "cannot use the catalog" in fallback.warnings[0]


def test_two_readers_on_one_host_walk_the_same_index_at_once(settings: Settings, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A dashboard and `status` on one host share the index: a walk that finds the clips it is about
    to add already added by the other's walk still ends with each clip once."""
    for i in range(5):
        publish(settings, i)
    path = tmp_path / "shared.sqlite"
    first, second = Catalog(settings, path), Catalog(settings, path)
    real, raced = index_module.read_metadata, []

    def racing(file: Path) -> Any:  # the first walk's first read: the other walk runs to its end
        if not raced:
            raced.append(file)
            second.reconcile()
        return real(file)

    monkeypatch.setattr(index_module, "read_metadata", racing)
    first.reconcile()
    assert raced and second.count() == first.count() == 5
    assert names(first, Filters(query="number")) == [f"clip{i:04d}" for i in reversed(range(5))]


def test_a_first_walk_builds_search_once_and_one_stopped_half_way_is_made_whole(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(23):
        publish(settings, i, prompt=f"a kite number {i}")
    monkeypatch.setattr(index_module, "BATCH", 5)
    real, reads = index_module.read_metadata, []

    def stopping(file: Path) -> Any:  # the disk goes away in the third batch
        reads.append(file)
        if len(reads) == 12:
            raise OSError("the share went away")
        return real(file)

    monkeypatch.setattr(index_module, "read_metadata", stopping)
    catalog = Catalog(settings, tmp_path / "c.sqlite")
    with pytest.raises(OSError):
        catalog.reconcile()
    assert catalog.indexing and catalog.count() == 10  # two batches in, search not built yet
    again = Catalog(settings, catalog.path)  # a restarted reader: the trigger is back, search is not
    publish(settings, 99, prompt="a lone kite", event=True)
    again.follow()
    again.reconcile()
    assert not again.indexing and again.count(Filters(query="kite")) == 24
    assert names(again, Filters(query="number 7")) == ["clip0007"]
