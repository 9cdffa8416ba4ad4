"""The published clips, newest first, as the catalog (catalog.index) holds them: a page, a search, a
count or a tally is a query of the local index, never a walk of the outbox. The index is brought up to
date at most every REFRESH_S (the event logs' new lines); its first walk of a large outbox runs in the
background, and the pages show what it has found so far meanwhile (`indexing`).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, replace

from i2v_watcher.catalog.index import Catalog, Entry, Filters, default_path
from i2v_watcher.catalog.judged import Judged, judged
from i2v_watcher.catalog.ranks import Placing, Variant, placings, variant
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import StartupError
from i2v_watcher.job.records import PublishedMetadata
from i2v_watcher.job.spec import MAX_VARIANTS

REFRESH_S = 0.5
SET_LIMIT = 8 * MAX_VARIANTS  # variants of one set shown (retries publish one again)
FIRST_WAIT_S = 2.0  # how long a request waits for the first walk before it shows what is indexed yet
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov")
STILL_SUFFIXES = (".jpg", ".png")


@dataclass(frozen=True)
class Clip:
    rel: str  # the metadata file, relative to the outbox
    name: str
    published_at: str
    prompt: str
    negative_prompt: str
    meta: PublishedMetadata
    files: tuple[str, ...]  # every output, relative to the outbox
    written_ns: int = 0  # the metadata file's mtime: when it was published, on the share's clock
    judgement: Judged | None = None  # the quality gate's, where it judged the clip
    variant: Variant | None = None  # one of the clips of a `variants: N` job
    placing: Placing | None = None  # the variant's rank among its set as published now (each walk's)

    @property
    def video(self) -> str | None:
        return next((f for f in self.files if f.lower().endswith(VIDEO_SUFFIXES)), None)

    @property
    def poster(self) -> str | None:
        stem = self.rel[: -len(".json")]
        return next((f for f in self.files if f.lower() in (stem.lower() + s for s in STILL_SUFFIXES)),
                    None)

    @property
    def presets(self) -> list[str]:
        return self.meta.presets


def _clip(rel: str, data: PublishedMetadata, written_ns: int = 0) -> Clip:
    """A clip from its metadata, with only the files beside it."""
    folder = rel.rpartition("/")[0]
    prefix = f"{folder}/" if folder else ""
    # Only files beside the metadata, as the daemon publishes them: a hand-edited list cannot point
    # anywhere else (and every file is still opened through files.open_inside).
    listed = tuple(f for f in data.files if f.startswith(prefix) and "/" not in f[len(prefix):])
    return Clip(rel=rel, name=data.name, published_at=data.published_at, prompt=data.prompt,
                negative_prompt=data.negative_prompt, meta=data, files=listed, written_ns=written_ns,
                judgement=judged(data.quality), variant=variant(data.variant))


def _from(found: Entry) -> Clip:
    return _clip(found.rel, found.meta, found.written_ns)


class Gallery:
    def __init__(self, settings: Settings, catalog: Catalog | None = None) -> None:
        try:
            self.catalog = catalog or Catalog(settings)
        except (OSError, sqlite3.Error) as exc:  # a dashboard without its index would walk the share
            raise StartupError(f"cannot open the catalog's index at {default_path(settings)}: {exc}; set "
                               "catalog_path to a file on a local disk this user can write") from exc

    def fresh(self) -> Catalog:
        """The index, brought up to date (at most every REFRESH_S)."""
        self.catalog.refresh(every_s=REFRESH_S, wait_s=FIRST_WAIT_S)
        return self.catalog

    def start(self) -> None:
        """Begin the index's first walk (or its overdue reconciling one) in the background, so that
        it is under way before the first page is asked for."""
        self.catalog.refresh(wait_s=0.0)

    @property
    def indexing(self) -> bool:
        return self.catalog.indexing

    def page(self, filters: Filters, page: int, size: int) -> tuple[list[Clip], int]:
        """One page of the clips that match, newest first, and how many match; a `variants` filter (a
        set's first job id): that set's variants alone, best first."""
        catalog = self.fresh()
        start = max(0, (page - 1) * size)
        if filters.variants is not None:
            members = self._placed([_from(e) for e in catalog.page(filters, 0, SET_LIMIT)])
            members.sort(key=lambda c: c.placing.rank if c.placing is not None else 0)
            return members[start:start + size], len(members)
        return self._placed([_from(e) for e in catalog.page(filters, start, size)]), catalog.count(filters)

    def _placed(self, clips: list[Clip]) -> list[Clip]:
        """The clips, each variant with its rank among its set as published now."""
        sets = {c.variant.of for c in clips if c.variant is not None}
        members = [(e.rel, one, e.meta.quality) for of in sets
                   for e in self.catalog.page(Filters(variants=of), 0, SET_LIMIT)
                   for one in [e.variant] if one is not None]
        placed = placings(members)
        return [replace(c, placing=placed[c.rel]) if c.rel in placed else c for c in clips]

    def tally(self, filters: Filters) -> tuple[Counter[str], Counter[str]]:
        """How many of the clips that match have each verdict, and each symptom (every backend)."""
        verdicts: Counter[str] = Counter()
        symptoms: Counter[str] = Counter()
        for by_verdict, by_symptom in self.fresh().tally(filters).values():
            verdicts.update(by_verdict)
            symptoms.update(by_symptom)
        return verdicts, symptoms

    def published_from(self, job: str, written_ns: int) -> Clip | None:
        """The latest clip of the inbox job `job` published at or after written_ns (the share's clock)."""
        found = self.fresh().published_from(job, written_ns)
        return None if found is None else self._placed([_from(found)])[0]
