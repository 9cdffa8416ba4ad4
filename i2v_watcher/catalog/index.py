"""The catalog: a local SQLite index of the published clips, so that pages, searches and counts never
walk the outbox. Built from one full walk, then kept current from the event logs' new lines (each log's
offset kept in the index), with a reconciling walk every `catalog_rescan_s` that catches what a person
added or removed by hand. The share stays the truth: the index is a cache, one file per outbox, in a
local folder (never on the share: SQLite's locks are not safe on NFS).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import structlog

from i2v_watcher.catalog import events
from i2v_watcher.catalog.walk import Identity, identity, metadata_files, read_metadata
from i2v_watcher.config.settings import Settings
from i2v_watcher.inbox.watch import Inbox
from i2v_watcher.job.records import PublishedMetadata

log = structlog.get_logger("i2v_watcher.catalog.index")

BATCH = 2000  # metadata files read and written per transaction of a walk
KEEP_EVENTS = 10_000  # the last events kept for the dashboard to show; the logs keep them all
VERDICTS = ("pass", "warn", "fail")  # the quality gate's (service.judged): anything else is no verdict
SCHEMA = """
CREATE TABLE IF NOT EXISTS clips (
    rel TEXT PRIMARY KEY, name TEXT NOT NULL, published_at TEXT NOT NULL, backend TEXT, model TEXT,
    prompt TEXT NOT NULL, verdict TEXT, worker TEXT, job_id TEXT, ino INTEGER NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, meta TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS clips_newest ON clips (published_at DESC, rel DESC);
CREATE INDEX IF NOT EXISTS clips_verdict ON clips (verdict, published_at DESC);
CREATE INDEX IF NOT EXISTS clips_backend ON clips (backend, published_at DESC);
CREATE INDEX IF NOT EXISTS clips_model ON clips (model, published_at DESC);
CREATE INDEX IF NOT EXISTS clips_worker ON clips (worker, published_at DESC);
CREATE VIRTUAL TABLE IF NOT EXISTS clips_text USING fts5 (
    name, prompt, content='clips', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2');
CREATE TRIGGER IF NOT EXISTS clips_added AFTER INSERT ON clips BEGIN
    INSERT INTO clips_text (rowid, name, prompt) VALUES (new.rowid, new.name, new.prompt); END;
CREATE TRIGGER IF NOT EXISTS clips_dropped AFTER DELETE ON clips BEGIN
    INSERT INTO clips_text (clips_text, rowid, name, prompt) VALUES ('delete', old.rowid, old.name,
    old.prompt); END;
-- .json files that are not a clip's metadata: remembered, so that a walk reads them once per version
CREATE TABLE IF NOT EXISTS others (rel TEXT PRIMARY KEY, ino INTEGER, size INTEGER, mtime_ns INTEGER);
CREATE TABLE IF NOT EXISTS logs (name TEXT PRIMARY KEY, inode INTEGER NOT NULL, offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, at TEXT, worker TEXT, kind TEXT NOT NULL, job_id TEXT, name TEXT, line TEXT);
CREATE TABLE IF NOT EXISTS facts (key TEXT PRIMARY KEY, value);
"""
COLUMNS = "rel, name, published_at, backend, model, prompt, verdict, worker, job_id, meta"  # an Entry's
STORED = "rel, name, published_at, backend, model, prompt, verdict, worker, job_id, ino, size, mtime_ns, meta"
PLACES = ", ".join("?" for _ in STORED.split(","))


def default_path(settings: Settings) -> Path:
    """`catalog_path`, else a file named after the outbox's path in a local cache folder: systemd's
    CacheDirectory=, $XDG_CACHE_HOME or ~/.cache."""
    if settings.catalog_path is not None:
        return settings.catalog_path
    key = hashlib.sha256(os.fsencode(settings.outbox)).hexdigest()[:16]
    if os.environ.get("CACHE_DIRECTORY"):
        base = Path(os.environ["CACHE_DIRECTORY"].split(":")[0])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()) / "i2v-watcher"
    return base / f"catalog-{key}.sqlite"


@dataclass(frozen=True)
class Filters:
    """What a page or a count keeps: every word of `query` (a prefix of a word of the name or prompt),
    and each field given; `since`/`until`: published_at from/before (ISO dates or times)."""

    query: str = ""
    backend: str | None = None
    model: str | None = None
    verdict: str | None = None
    worker: str | None = None
    since: str | None = None
    until: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        terms, args = ["1"], []
        words = [w for w in self.query.split() if any(c.isalnum() for c in w)]
        if words:
            terms.append("rowid IN (SELECT rowid FROM clips_text WHERE clips_text MATCH ?)")
            args.append(" ".join('"' + w.replace('"', '""') + '"*' for w in words))
        for column in ("backend", "model", "verdict", "worker"):
            if getattr(self, column) is not None:
                terms.append(f"{column} = ?")
                args.append(getattr(self, column))
        if self.since is not None:
            terms.append("published_at >= ?")
            args.append(self.since)
        if self.until is not None:
            terms.append("published_at < ?")
            args.append(self.until)
        return " AND ".join(terms), args


@dataclass(frozen=True)
class Entry:
    """A published clip as the index holds it; `meta` is its whole metadata, as read."""

    rel: str  # the metadata file, relative to the outbox
    name: str
    published_at: str
    backend: str | None
    model: str | None
    prompt: str
    verdict: str | None
    worker: str | None
    job_id: str | None
    meta: PublishedMetadata


def _entry(row: tuple[Any, ...]) -> Entry:
    rel, name, published_at, backend, model, prompt, verdict, worker, job_id, meta = row
    return Entry(rel, name, published_at, backend, model, prompt, verdict, worker, job_id,
                 PublishedMetadata.model_validate_json(meta))


def _row(rel: str, ident: Identity, data: PublishedMetadata) -> tuple[Any, ...]:
    quality = data.quality if isinstance(data.quality, dict) else {}
    verdict = quality.get("verdict") if quality.get("verdict") in VERDICTS else None
    return (rel, data.name, data.published_at, data.backend, data.model, data.prompt, verdict,
            data.worker_id, data.job_id, *ident, data.model_dump_json())


class Catalog:
    """The index of one outbox. Thread-safe (one connection behind a lock: the dashboard's threads
    share it); `refresh()` brings it up to date cheaply and is meant to be called before each read."""

    def __init__(self, settings: Settings, path: Path | None = None) -> None:
        self.settings = settings
        self.root = settings.outbox
        self.path = path or default_path(settings)
        self.skip = Inbox(settings).is_ignored
        self._lock = threading.RLock()  # the connection's
        self._walking = threading.Lock()  # one reconciling walk at a time
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a cache: losing the last writes costs a walk
        self._db.executescript(SCHEMA)
        if self._fact("outbox") not in (None, str(self.root)):  # a catalog_path shared by another outbox
            with self._write():
                for table in ("clips", "others", "logs", "events", "facts"):
                    self._db.execute(f"DELETE FROM {table}")
        self._set_fact("outbox", str(self.root))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _fact(self, key: str) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM facts WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_fact(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO facts (key, value) VALUES (?, ?)", (key, value))

    # Keeping it current

    def refresh(self) -> None:
        """Up to date: the new lines of every event log, and a reconciling walk where none was made in
        the last `catalog_rescan_s` (the first call on a new index walks the whole outbox)."""
        walked = self._fact("walked_at")
        if walked is None or time.time() - float(walked) >= self.settings.catalog_rescan_s:
            self.reconcile()
        else:
            self.follow()

    def follow(self) -> int:
        """Apply the event logs' lines not read yet; how many events were read."""
        read = 0
        with self._lock:
            known = {name: events.Position(inode, offset) for name, inode, offset in
                     self._db.execute("SELECT name, inode, offset FROM logs")}
            for path in events.logs(self.settings):
                found, position = events.read_new(path, known.get(path.name))
                if position is None or position == known.get(path.name):
                    continue
                with self._write():
                    for event in found:
                        self._apply(event)
                    self._db.execute("INSERT OR REPLACE INTO logs (name, inode, offset) VALUES (?, ?, ?)",
                                     (path.name, position.inode, position.offset))
                    self._db.execute("DELETE FROM events WHERE seq <= (SELECT max(seq) FROM events) - ?",
                                     (KEEP_EVENTS,))
                read += len(found)
        return read

    def _apply(self, event: dict[str, Any]) -> None:
        texts = {k: v if isinstance(v, str) else None for k in ("at", "worker", "kind", "job_id", "name")
                 for v in [event.get(k)]}
        self._db.execute("INSERT INTO events (at, worker, kind, job_id, name, line) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (*texts.values(), _dumped(event)))
        rel = self._inside(event.get("path"))
        if rel is not None:  # published, or removed: the file as it is now says which
            self._index_file(rel)

    def _inside(self, rel: object) -> str | None:
        """An event's `path` where it can only name a metadata file inside the outbox that a walk would
        see; else None (a log is anyone's file)."""
        if not isinstance(rel, str) or not rel.endswith(".json") or rel.startswith("/"):
            return None
        parts = PurePosixPath(rel).parts
        if any(p in ("", ".", "..") or self.skip(p) for p in parts) or "/".join(parts) != rel:
            return None
        return rel

    def _index_file(self, rel: str) -> None:
        """(In a write) the clip at rel as it is now on the share: added, changed or gone."""
        try:
            st = os.lstat(self.root / rel)
        except OSError:
            self._forget(rel)
            return
        self._store(rel, identity(st))

    def _store(self, rel: str, ident: Identity, *, known: bool = True) -> None:
        data = read_metadata(self.root / rel)
        if known:  # a walk knows which are new: two deletes spared per file on the first one
            self._forget(rel)
        if data is None:
            self._db.execute("INSERT INTO others (rel, ino, size, mtime_ns) VALUES (?, ?, ?, ?)",
                             (rel, *ident))
        else:
            self._db.execute(f"INSERT INTO clips ({STORED}) VALUES ({PLACES})", _row(rel, ident, data))

    def _forget(self, rel: str) -> None:
        self._db.execute("DELETE FROM clips WHERE rel = ?", (rel,))
        self._db.execute("DELETE FROM others WHERE rel = ?", (rel,))

    def reconcile(self) -> None:
        """A walk of the whole outbox: each metadata file read again only where it changed (inode, size,
        mtime), the ones gone dropped. An outbox that cannot be read leaves the index as it is. Written
        BATCH files at a time, so that readers are served between batches (a first walk of 100,000
        clips takes a while: `indexing` says so meanwhile); one walk at a time, a second caller only
        follows the logs."""
        if not self._walking.acquire(blocking=False):
            self.follow()
            return
        try:
            self.follow()  # first: the events appended during the walk are read (again) next time
            started = time.monotonic()
            try:
                found = {rel: identity(st) for rel, st in metadata_files(self.root, self.skip)}
            except OSError as exc:
                log.warning("cannot read the outbox: the catalog stays as it was", error=str(exc))
                return
            with self._lock:
                known = {rel: (ino, size, mtime) for table in ("clips", "others") for rel, ino, size, mtime
                         in self._db.execute(f"SELECT rel, ino, size, mtime_ns FROM {table}")}
            with self._write():
                for rel in known.keys() - found.keys():
                    self._forget(rel)
            changed = [(rel, ident) for rel, ident in found.items() if known.get(rel) != ident]
            for start in range(0, len(changed), BATCH):
                with self._write():
                    for rel, ident in changed[start:start + BATCH]:
                        self._store(rel, ident, known=rel in known)
            self._set_fact("walked_at", time.time())
            log.debug("catalog reconciled", files=len(found), read=len(changed),
                      seconds=round(time.monotonic() - started, 3))
        finally:
            self._walking.release()

    @property
    def indexing(self) -> bool:
        """Whether the first walk of the outbox is still under way (the pages show what it found yet)."""
        return self._fact("walked_at") is None

    # Reading it

    def page(self, filters: Filters = Filters(), offset: int = 0, limit: int = 24) -> list[Entry]:
        """The clips that match, newest first by published_at."""
        where, args = filters.where()
        with self._lock:
            rows = self._db.execute(f"SELECT {COLUMNS} FROM clips WHERE {where} "
                                    "ORDER BY published_at DESC, rel DESC LIMIT ? OFFSET ?",
                                    (*args, limit, max(0, offset))).fetchall()
        return [_entry(row) for row in rows]

    def count(self, filters: Filters = Filters()) -> int:
        where, args = filters.where()
        with self._lock:
            row = self._db.execute(f"SELECT count(*) FROM clips WHERE {where}", args).fetchone()
        return int(row[0])

    def recent_events(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last events read from the logs, newest first (what each was: its line as written)."""
        with self._lock:
            rows = self._db.execute("SELECT line FROM events ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [json.loads(line) for line, in rows]


def _dumped(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))
