"""The outbox's metadata files (`<name>.json`, written last by the daemon as the marker that a job is
complete) found by a walk, and read leniently: the one way the catalog's index sees the outbox."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from i2v_watcher.fs.atomic import read_json
from i2v_watcher.job.records import MAX_RECORD_BYTES, PublishedMetadata

Identity = tuple[int, int, int]  # inode, size, mtime: a metadata file is read again only when it changes
# What reading an untrusted JSON file can raise: missing, a link, too large, not JSON, nested too deep.
UNREADABLE = (OSError, ValueError, RecursionError)


def identity(st: os.stat_result) -> Identity:
    return st.st_ino, st.st_size, st.st_mtime_ns


def metadata_files(root: Path, skip: Callable[[str], bool]) -> Iterator[tuple[str, os.stat_result]]:
    """Every `.json` below root (relative, '/'-separated) with its lstat; folders and files whose name
    `skip` accepts are left out, links never followed, an unreadable sub-folder hides its own files
    only. OSError where root itself cannot be read."""
    stack = [""]
    while stack:  # names as strings: a Path per entry costs more than the file system does
        rel_dir = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel_dir)))
        except OSError:
            if not rel_dir:
                raise
            continue
        for entry in entries:  # two in three are a clip's video and poster: passed over first
            name = entry.name
            folder = entry.is_dir(follow_symlinks=False)
            if not (folder or name.endswith(".json")) or skip(name):
                continue
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if folder:
                stack.append(rel)
                continue
            try:
                yield rel, entry.stat(follow_symlinks=False)
            except OSError:
                continue


def read_metadata(path: Path) -> tuple[PublishedMetadata, str] | None:
    """A clip's metadata, and the JSON it was read from (what the index keeps: `stored`), or None for
    a .json that is not a job's metadata (someone's file, a broken one)."""
    try:
        data = read_json(path, MAX_RECORD_BYTES)
        return PublishedMetadata.from_data(data, lenient=True), json.dumps(data, ensure_ascii=False)
    except UNREADABLE:
        return None


def stored(text: str) -> PublishedMetadata:
    """The metadata kept by the index (read_metadata's JSON), read as it was then."""
    return PublishedMetadata.from_data(json.loads(text), lenient=True)
