"""The gallery of an outbox with thousands of clips: newest first, searchable, paginated, and each
metadata file read once per version."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Folders, announce
from i2v_watcher.catalog import walk as walk_module
from i2v_watcher.catalog.index import Filters
from i2v_watcher.config.settings import Settings
from i2v_watcher.web import gallery as gallery_module
from i2v_watcher.web.gallery import Gallery
from web.conftest import WebServer

CLIPS = 3000


def settings(root: Path) -> Settings:
    return Settings(inbox=root / "inbox", outbox=root / "outbox", failed=root / "failed", done=root / "done",
                    work=root / "work")


def publish(outbox: Path, name: str, prompt: str, published_at: str, folder: str = "") -> None:
    where = outbox / folder
    where.mkdir(parents=True, exist_ok=True)
    prefix = f"{folder}/" if folder else ""
    (where / f"{name}.json").write_text(json.dumps({
        "job_id": name, "name": name, "prompt": prompt, "published_at": published_at,
        "files": [f"{prefix}{name}.mp4", f"{prefix}{name}.jpg", f"{prefix}{name}.json"]}))
    announce(outbox, f"{prefix}{name}.json")


def test_thousands_of_clips_page_newest_first_and_are_read_once(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    outbox = tmp_path / "outbox"
    for i in range(CLIPS):
        publish(outbox, f"clip{i:04d}", f"a {'fox' if i % 3 == 0 else 'cat'} number {i}",
                f"2026-11-25T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}+00:00", folder=f"team{i % 4}")
    (outbox / "notes.json").write_text('{"not": "a clip"}')  # someone's file: not a clip
    (outbox / "broken.json").write_text("{")
    gallery = Gallery(settings(tmp_path))

    every = Filters()
    first, total = gallery.page(every, 1, 24)
    assert total == CLIPS
    assert [c.name for c in first[:2]] == [f"clip{CLIPS - 1:04d}", f"clip{CLIPS - 2:04d}"]
    assert first[0].video == f"team{(CLIPS - 1) % 4}/clip{CLIPS - 1:04d}.mp4"
    assert first[0].poster == f"team{(CLIPS - 1) % 4}/clip{CLIPS - 1:04d}.jpg"
    last, _ = gallery.page(every, 125, 24)
    assert [c.name for c in last][-1] == "clip0000" and len(last) == 24
    assert gallery.page(every, 126, 24)[0] == []
    foxes, matches = gallery.page(Filters(query="FOX number"), 1, 10)
    assert matches == CLIPS // 3 and all("fox" in c.prompt for c in foxes)
    assert gallery.page(Filters(query="clip0042"), 1, 10)[1] == 1

    reads: list[Path] = []
    real = walk_module.read_json  # how the index reads a metadata file
    monkeypatch.setattr(walk_module, "read_json", lambda path, *a: reads.append(path) or real(path, *a))
    monkeypatch.setattr(gallery_module, "REFRESH_S", 0.0)  # every call looks at the event logs again
    gallery.page(every, 1, 24)
    assert reads == []  # nothing changed: nothing read again
    publish(outbox, "clip0005", "a fox, edited", "2027-01-01T00:00:00+00:00", folder="team1")
    os.utime(outbox / "team1" / "clip0005.json", ns=(1, 1))
    assert gallery.page(every, 1, 1)[0][0].name == f"clip{CLIPS - 1:04d}"  # by hand: not seen yet
    gallery.catalog.reconcile()  # the walk every catalog_rescan_s: reads the one file that changed
    newest, _ = gallery.page(every, 1, 1)
    assert reads == [outbox / "team1" / "clip0005.json"]
    assert newest[0].prompt == "a fox, edited"


def test_a_metadata_file_cannot_list_files_outside_its_folder(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    (outbox / "a").mkdir(parents=True)
    (outbox / "a" / "x.json").write_text(json.dumps({
        "job_id": "1", "name": "x", "published_at": "2026",
        "files": ["a/x.mp4", "../secret.mp4", "b/y.mp4", "a/../b.mp4", "/etc/passwd", 7, "a/x.jpg"]}))
    clip = Gallery(settings(tmp_path)).page(Filters(), 1, 1)[0][0]
    assert clip.files == ("a/x.mp4", "a/x.jpg")


def test_bidi_overrides_in_names_and_prompts_show_escaped(folders: Folders,
                                                          web: Callable[..., WebServer]) -> None:
    """A U+202E (and any other invisible formatting) in a published clip's name or prompt would reorder
    what the page shows; the gallery shows it escaped, as `status` and the logs do."""
    server = web()
    publish(folders.outbox, "clip", "a cat\u202e tac a\u2066", "2026-01-01T00:00:00+00:00")
    data = json.loads((folders.outbox / "clip.json").read_text())
    data.update(name="gnp\u202eexe", negative_prompt="blur\u200f\nnoise")
    (folders.outbox / "clip.json").write_text(json.dumps(data))
    with urllib.request.urlopen(f"{server.url}/gallery", timeout=10) as response:
        page = response.read().decode()
    for char in "\u202e\u2066\u200f":
        assert char not in page
    assert "gnp\\u202eexe" in page and "a cat\\u202e tac a\\u2066" in page
    assert "blur\\u200f\nnoise" in page  # a prompt keeps its line breaks
