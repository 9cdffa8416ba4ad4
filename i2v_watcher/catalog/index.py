"""The catalog: a local SQLite index of the published clips, so that pages, searches and counts never
walk the outbox. Built from one full walk, then kept current from the event logs' new lines (each log's
offset kept in the index), with a reconciling walk every `catalog_rescan_s` that catches what a person
added or removed by hand. The share stays the truth: the index is a cache, one file per outbox, in a
local folder (never on the share: SQLite's locks are not safe on NFS).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import structlog

from i2v_watcher.catalog import events
from i2v_watcher.catalog.schema import (
    ADDED,
    COLUMNS,
    EARLIER,
    INDEXES,
    PLACES,
    SCHEMA,
    STORED,
    TABLES,
    VERSION,
    Entry,
    Filters,
    entry,
    row,
)
from i2v_watcher.catalog.walk import Identity, identity, metadata_files, read_metadata
from i2v_watcher.config.settings import Settings
from i2v_watcher.inbox.watch import Inbox
from i2v_watcher.job.records import PublishedMetadata
from i2v_watcher.judge.score import SYMPTOMS

__all__ = ["Catalog", "Entry", "Filters", "default_path"]
T = TypeVar("T")
EVERY = Filters()

log = structlog.get_logger("i2v_watcher.catalog.index")

BATCH = 2000  # metadata files read and written per transaction of a walk
CACHE_KIB = 32 * 1024  # SQLite's page cache for this connection (its default: 2 MiB)
CHOICES = 100  # values of a column offered as a filter
CHOICES_S = 60.0
CACHED = 256  # answers kept for the index as it is now (a page, a count, a tally)


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


class Catalog:
    """The index of one outbox. Thread-safe (one connection behind a lock: the dashboard's threads
    share it); `refresh()` brings it up to date cheaply and is meant to be called before each read.
    Answers are kept while the index does not change (a dashboard's tabs ask the same questions every
    second), whoever changed it: this process, or another on this host sharing the file."""

    def __init__(self, settings: Settings, path: Path | None = None) -> None:
        self.settings = settings
        self.root = settings.outbox
        self.path = path or default_path(settings)
        self.skip = Inbox(settings).is_ignored
        self._lock = threading.RLock()  # the connection's
        self._walking = threading.Lock()  # one reconciling walk at a time
        self._refreshed = -float("inf")  # when refresh() last looked (time.monotonic)
        self._walker: threading.Thread | None = None  # the walk refresh() runs in the background
        self._walk_began = 0.0
        self._answers: dict[tuple[Any, ...], Any] = {}
        self._choices: dict[str, tuple[float, list[str]]] = {}  # column: (when, values)
        self._answered_at: tuple[int, int] | None = None  # the index's version the answers are of
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a cache: losing the last writes costs a walk
        self._db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")  # a walk's inserts touch pages all over
        if self._db.execute("PRAGMA user_version").fetchone()[0] != VERSION:
            for table in (*TABLES, *EARLIER):  # another version's cache (or none yet): built again
                self._db.execute(f"DROP TABLE IF EXISTS {table}")
            self._db.execute(f"PRAGMA user_version = {VERSION}")
        self._db.executescript(SCHEMA)
        if self._fact("outbox") not in (None, str(self.root)):  # a catalog_path shared by another outbox
            with self._write():
                for table in TABLES:
                    if table != "clips_text":  # emptied with clips (its trigger)
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
            found = self._db.execute("SELECT value FROM facts WHERE key = ?", (key,)).fetchone()
        return found[0] if found else None

    def _set_fact(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO facts (key, value) VALUES (?, ?)", (key, value))

    # Keeping it current

    def refresh(self, *, every_s: float = 0.0, wait_s: float | None = None) -> None:
        """Up to date: the new lines of every event log, and a reconciling walk where none was made in
        the last `catalog_rescan_s` (the first call on a new index walks the whole outbox). Nothing
        where the last call with `every_s` was under `every_s` ago. `wait_s`: the walk runs in the
        background and this call waits for it that long at most (a dashboard serves what is indexed
        so far)."""
        if every_s > 0:  # a caller that asks again and again (the dashboard's requests)
            with self._lock:
                now = time.monotonic()
                if now - self._refreshed < every_s:
                    return
                self._refreshed = now
        walked = self._fact("walked_at")
        if walked is not None and time.time() - float(walked) < self.settings.catalog_rescan_s:
            self.follow()
        elif wait_s is None:
            self.reconcile()
        else:
            with self._lock:
                if self._walker is None or not self._walker.is_alive():
                    self._walker = threading.Thread(target=self._reconcile_logged, name="catalog-walk",
                                                    daemon=True)
                    self._walker.start()
                    self._walk_began = time.monotonic()
                walker = self._walker
            if walked is None:  # the first walk: waited for, at most wait_s after it began
                walker.join(max(0.0, self._walk_began + wait_s - time.monotonic()))
            else:  # a later one: what it finds comes with its batches
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
                read += len(found)
        return read

    def _apply(self, event: dict[str, Any]) -> None:
        """(In a write) an event that names a clip's metadata file: the file as it is now says whether
        it was published or removed. Other events change no clip (the dashboard's recent actions read
        the command logs themselves: web.actions)."""
        rel = self._inside(event.get("path"))
        if rel is None:
            return
        try:
            ident = identity(os.lstat(self.root / rel))
        except OSError:
            self._forget([rel])
            return
        self._store([(rel, ident, read_metadata(self.root / rel))])

    def _inside(self, rel: object) -> str | None:
        """An event's `path` where it can only name a metadata file inside the outbox that a walk would
        see; else None (a log is anyone's file)."""
        if not isinstance(rel, str) or not rel.endswith(".json") or rel.startswith("/"):
            return None
        parts = PurePosixPath(rel).parts
        if any(p in ("", ".", "..") or self.skip(p) for p in parts) or "/".join(parts) != rel:
            return None
        return rel

    def _store(self, found: list[tuple[str, Identity, tuple[PublishedMetadata, str] | None]], *,
               known: bool = True) -> None:
        """(In a write) each metadata file as read: a clip, or another .json remembered as not one.
        `known`: whether any may be in the index already (a first walk spares the deletes)."""
        if known:
            self._forget([rel for rel, _, _ in found])
        self._db.executemany("INSERT INTO others (rel, ino, size, mtime_ns) VALUES (?, ?, ?, ?)",
                             ((rel, *ident) for rel, ident, read in found if read is None))
        # The rowids given here (in a write: no one else adds meanwhile) tie each clip to its metadata.
        last = self._db.execute("SELECT coalesce(max(rowid), 0) FROM clips").fetchone()[0]
        clips = list(enumerate(((rel, ident, read) for rel, ident, read in found if read is not None),
                               start=last + 1))
        self._db.executemany(f"INSERT INTO clips (rowid, {STORED}) VALUES (?, {PLACES})",
                             ((rowid, *row(rel, ident, data)) for rowid, (rel, ident, (data, _)) in clips))
        self._db.executemany("INSERT INTO clips_meta (id, meta) VALUES (?, ?)",
                             ((rowid, text) for rowid, (_, _, (_, text)) in clips))

    def _forget(self, rels: Collection[str]) -> None:
        """(In a write) these files out of the index, clips or not."""
        for table in ("clips", "others"):
            self._db.executemany(f"DELETE FROM {table} WHERE rel = ?", ((rel,) for rel in rels))

    def reconcile(self) -> None:
        """A walk of the whole outbox: each metadata file read again only where it changed (inode, size,
        mtime), the ones gone dropped. An outbox that cannot be read leaves the index as it is. Read
        and written BATCH files at a time, the files read outside the lock, so that readers are served
        between batches (a first walk of 100,000 clips takes a while: `indexing` says so meanwhile, and
        search finds its clips once it is done); one walk at a time, a second caller only follows the
        logs."""
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
            gone = known.keys() - found.keys()
            if gone:
                with self._write():
                    self._forget(gone)
            changed = [(rel, ident) for rel, ident in found.items() if known.get(rel) != ident]
            if not known and len(changed) > BATCH:  # a first walk: its indexes are built at its end
                with self._write():
                    self._set_fact("search_stale", 1)
                    self._db.execute("DROP TRIGGER IF EXISTS clips_added")
                    for name in INDEXES:
                        self._db.execute(f"DROP INDEX IF EXISTS {name}")
            for start in range(0, len(changed), BATCH):
                batch = changed[start:start + BATCH]
                read = [(rel, ident, read_metadata(self.root / rel)) for rel, ident in batch]
                try:
                    with self._write():
                        self._store(read, known=any(rel in known for rel, _ in batch))
                except sqlite3.IntegrityError:  # another process on this host indexed some meanwhile
                    with self._write():
                        self._store(read)
            if self._fact("search_stale"):  # this walk's, or one that stopped half-way
                with self._write():
                    self._db.execute("INSERT INTO clips_text (clips_text) VALUES ('rebuild')")
                    self._db.execute(ADDED)
                    self._db.execute("DELETE FROM facts WHERE key = 'search_stale'")
                with self._lock:
                    self._db.executescript(SCHEMA)  # the indexes, each built in one pass
            self._set_fact("walked_at", time.time())
            log.debug("catalog reconciled", files=len(found), read=len(changed),
                      seconds=round(time.monotonic() - started, 3))
        finally:
            self._walking.release()

    def _reconcile_logged(self) -> None:
        """A walk in the background: what stops it is logged (the next refresh tries again)."""
        try:
            self.reconcile()
        except (OSError, sqlite3.Error) as exc:
            log.error("the catalog's walk stopped: it is tried again at the next refresh", error=str(exc),
                      index=str(self.path))

    @property
    def indexing(self) -> bool:
        """Whether the first walk of the outbox is still under way (the pages show what it found yet)."""
        return self._fact("walked_at") is None

    # Reading it

    def _answer(self, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
        """An answer as of the index's current version: computed again only after the index changed
        (data_version: another connection's commits; total_changes: this one's)."""
        with self._lock:
            version = (self._db.total_changes, self._db.execute("PRAGMA data_version").fetchone()[0])
            if version != self._answered_at:
                self._answers.clear()
                self._answered_at = version
            if key not in self._answers:
                if len(self._answers) >= CACHED:
                    self._answers.clear()
                self._answers[key] = compute()
            answer: T = self._answers[key]
            return answer

    def _rows(self, sql: str, args: tuple[Any, ...] | list[Any]) -> list[tuple[Any, ...]]:
        return self._answer((sql, *args), lambda: self._db.execute(sql, args).fetchall())

    def page(self, filters: Filters = EVERY, offset: int = 0, limit: int = 24) -> list[Entry]:
        """The clips that match, newest first by published_at."""
        return self._entries("ORDER BY published_at DESC, rel DESC LIMIT ? OFFSET ?", filters,
                             limit, max(0, offset))

    def _entries(self, order: str, filters: Filters, *more: Any) -> list[Entry]:
        where, args = filters.where()
        sql = f"SELECT {COLUMNS} FROM clips WHERE {where} {order}"
        return self._answer((sql, *args, *more),
                            lambda: [entry(found) for found in self._db.execute(sql, (*args, *more))])

    def count(self, filters: Filters = EVERY) -> int:
        where, args = filters.where()
        return int(self._rows(f"SELECT count(*) FROM clips WHERE {where}", args)[0][0])

    def tally(self, filters: Filters = EVERY) -> dict[str, tuple[Counter[str], Counter[str]]]:
        """Of the clips that match, per backend: how many have each verdict, and each symptom. Counted
        by the set of symptoms a clip has (a few distinct ones), so that no row is looked into six
        times."""
        where, args = filters.where()
        found = self._rows("SELECT coalesce(backend, ''), verdict, symptoms, count(*) FROM clips "
                           f"WHERE {where} AND verdict IS NOT NULL GROUP BY backend, verdict, symptoms", args)
        tallies: dict[str, tuple[Counter[str], Counter[str]]] = {}
        for backend, verdict, symptoms, clips in found:
            verdicts, seen = tallies.setdefault(backend, (Counter(), Counter()))
            verdicts[verdict] += clips
            seen.update({s: clips for s in symptoms.split() if s in SYMPTOMS})
        return tallies

    def values(self, column: str) -> list[str]:
        """The values one of the filtered columns holds (backend, model, worker), for a page's choices:
        at most CHOICES (a hand-edited share could hold a value per clip). Looked up again at most
        every CHOICES_S whatever changed (a full scan: a new model's name may take that long to be
        offered)."""
        if column not in ("backend", "model", "worker"):
            raise ValueError(f"not a column to choose from: {column}")
        with self._lock:
            known = self._choices.get(column)
            if known is None or time.monotonic() - known[0] >= CHOICES_S:
                found = [value for value, in self._db.execute(
                    f"SELECT DISTINCT {column} FROM clips WHERE {column} IS NOT NULL ORDER BY 1 LIMIT ?",
                    (CHOICES,))]
                known = self._choices[column] = (time.monotonic(), found)
            return known[1]

    def published_from(self, source: str, written_ns: int = 0) -> Entry | None:
        """The latest clip made from the inbox job `source` (its path without suffix) whose metadata
        was written at or after `written_ns`."""
        found = self._entries("AND source = ? AND mtime_ns >= ? ORDER BY mtime_ns DESC LIMIT 1", EVERY,
                              source, written_ns)
        return found[0] if found else None

    def names(self) -> list[str]:
        """Every clip's metadata file (relative to the outbox), oldest first."""
        return [rel for rel, in self._rows("SELECT rel FROM clips ORDER BY published_at, rel", ())]
