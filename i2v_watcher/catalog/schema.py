"""The catalog's tables, a published clip as a row of them, and the filters a page or a count asks for.

The index is a cache of the outbox: a file written by another version of the schema is emptied and
built again (`VERSION`, kept in SQLite's user_version), never migrated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from i2v_watcher.catalog.judged import judged
from i2v_watcher.catalog.ranks import Variant, variant
from i2v_watcher.catalog.walk import Identity, stored
from i2v_watcher.job.records import PublishedMetadata

VERSION = 5
TABLES = ("clips", "clips_meta", "clips_text", "others", "logs", "facts")
EARLIER = ("events",)  # tables of earlier versions, dropped with the rest
# Search's index and the indexes below follow each insert; a first walk of a large outbox drops them
# and builds them once at its end (catalog.index.reconcile), several times faster than a row at a time.
INDEXES = ("clips_newest", "clips_verdict", "clips_variants", "clips_source", "clips_judged")
ADDED = """CREATE TRIGGER IF NOT EXISTS clips_added AFTER INSERT ON clips BEGIN
    INSERT INTO clips_text (rowid, name, prompt) VALUES (new.rowid, new.name, new.prompt); END;"""
SCHEMA = """
CREATE TABLE IF NOT EXISTS clips (
    rel TEXT PRIMARY KEY, name TEXT NOT NULL, published_at TEXT NOT NULL, backend TEXT, model TEXT,
    prompt TEXT NOT NULL, verdict TEXT, symptoms TEXT NOT NULL, variant_of TEXT, source TEXT,
    worker TEXT, job_id TEXT, ino INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL);
-- Each clip's whole metadata, apart: the rows that counts, tallies and choices scan stay narrow (a
-- tenth of the size), and a page reads the metadata of its own clips only.
CREATE TABLE IF NOT EXISTS clips_meta (id INTEGER PRIMARY KEY, meta TEXT NOT NULL);
-- Few indexes: each costs every insert after the first walk; a filter by backend, model or worker
-- reads the newest-first index, and its counts are kept while the index does not change.
CREATE INDEX IF NOT EXISTS clips_newest ON clips (published_at DESC, rel DESC);
CREATE INDEX IF NOT EXISTS clips_verdict ON clips (verdict, published_at DESC);
CREATE INDEX IF NOT EXISTS clips_variants ON clips (variant_of) WHERE variant_of IS NOT NULL;
CREATE INDEX IF NOT EXISTS clips_source ON clips (source);
-- The tallies beside the filters and in /metrics read this alone, in its order.
CREATE INDEX IF NOT EXISTS clips_judged ON clips (backend, verdict, symptoms) WHERE verdict IS NOT NULL;
CREATE VIRTUAL TABLE IF NOT EXISTS clips_text USING fts5 (
    name, prompt, content='clips', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2');
""" + ADDED + """
CREATE TRIGGER IF NOT EXISTS clips_dropped AFTER DELETE ON clips BEGIN
    INSERT INTO clips_text (clips_text, rowid, name, prompt) VALUES ('delete', old.rowid, old.name,
    old.prompt);
    DELETE FROM clips_meta WHERE id = old.rowid; END;
-- .json files that are not a clip's metadata: remembered, so that a walk reads them once per version
CREATE TABLE IF NOT EXISTS others (rel TEXT PRIMARY KEY, ino INTEGER, size INTEGER, mtime_ns INTEGER);
CREATE TABLE IF NOT EXISTS logs (name TEXT PRIMARY KEY, inode INTEGER NOT NULL, offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS facts (key TEXT PRIMARY KEY, value);
"""
COLUMNS = "rel, mtime_ns, (SELECT meta FROM clips_meta WHERE id = clips.rowid)"  # an Entry's
STORED = ("rel, name, published_at, backend, model, prompt, verdict, symptoms, variant_of, source, worker, "
          "job_id, ino, size, mtime_ns")

PLACES = ", ".join("?" for _ in STORED.split(","))


@dataclass(frozen=True)
class Filters:
    """What a page or a count keeps: every word of `query` (a prefix of a word of the name or prompt),
    and each field given: `symptom` one the gate found, `variants` the set named by its first job id;
    `since`/`until`: published_at from/before (ISO dates or times)."""

    query: str = ""
    backend: str | None = None
    model: str | None = None
    verdict: str | None = None
    worker: str | None = None
    symptom: str | None = None
    variants: str | None = None
    since: str | None = None
    until: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        terms, args = ["1"], []
        words = [w for w in self.query.split() if any(c.isalnum() for c in w)]
        if words:
            terms.append("rowid IN (SELECT rowid FROM clips_text WHERE clips_text MATCH ?)")
            args.append(" ".join('"' + w.replace('"', '""') + '"*' for w in words))
        for column, value in (("backend", self.backend), ("model", self.model), ("verdict", self.verdict),
                              ("worker", self.worker), ("variant_of", self.variants)):
            if value is not None:
                terms.append(f"{column} = ?")
                args.append(value)
        if self.symptom is not None:
            terms.append("instr(symptoms, ?) > 0")
            args.append(f" {self.symptom} ")
        if self.since is not None:
            terms.append("published_at >= ?")
            args.append(self.since)
        if self.until is not None:
            terms.append("published_at < ?")
            args.append(self.until)
        return " AND ".join(terms), args


@dataclass(frozen=True)
class Entry:
    """A published clip as the index holds it: its metadata file (relative to the outbox), when that
    was written (the share's clock) and its whole metadata, as read."""

    rel: str
    written_ns: int
    meta: PublishedMetadata

    @property
    def variant(self) -> Variant | None:
        return variant(self.meta.variant)


def entry(row: tuple[Any, ...]) -> Entry:
    rel, written_ns, meta = row
    return Entry(rel, written_ns, stored(meta))


def row(rel: str, ident: Identity, data: PublishedMetadata) -> tuple[Any, ...]:
    """The clips table's row for a metadata file: the gate's verdict and symptoms, the variant set and
    the inbox job it came from, as the dashboard filters them (read leniently: see catalog.judged)."""
    found, one = judged(data.quality), variant(data.variant)
    symptoms = "".join(f" {s} " for s in found.symptoms) if found is not None else ""
    source = data.input.path.rpartition(".")[0] if data.input is not None else None
    return (rel, data.name, data.published_at, data.backend, data.model, data.prompt,
            found.verdict if found is not None else None, symptoms, one.of if one is not None else None,
            source, data.worker_id, data.job_id, *ident)
