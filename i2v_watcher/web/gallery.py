"""The published clips, newest first, from the outbox's metadata files (`<name>.json`, written last by
the daemon as the marker that a job is complete).

An outbox holds thousands of clips: each metadata file is read once per version (inode, size, mtime)
and remembered; a walk of the folder's names (at most one per REFRESH_S) and a sort make a page.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, replace

from i2v_watcher.catalog.walk import Identity, identity, metadata_files, read_metadata
from i2v_watcher.config.settings import Settings
from i2v_watcher.inbox.watch import Inbox
from i2v_watcher.job.records import PublishedMetadata
from i2v_watcher.service.judged import Judged, judged
from i2v_watcher.service.ranks import Placing, Variant, placings, variant

REFRESH_S = 0.5
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

    def matches(self, words: list[str]) -> bool:
        text = f"{self.name}\n{self.prompt}\n{self.rel}".lower()
        return all(word in text for word in words)

    def judged_as(self, verdict: str | None, symptom: str | None) -> bool:
        """Whether the gate gave it this verdict and found this symptom (None: any, or none judged)."""
        if verdict is None and symptom is None:
            return True
        found = self.judgement
        return found is not None and verdict in (None, found.verdict) and \
            (symptom is None or symptom in found.symptoms)


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


def tally(clips: list[Clip]) -> tuple[Counter[str], Counter[str]]:
    """How many of these clips have each verdict, and each symptom: the counts beside the filters."""
    verdicts: Counter[str] = Counter()
    symptoms: Counter[str] = Counter()
    for clip in clips:
        if clip.judgement is not None:
            verdicts[clip.judgement.verdict] += 1
            symptoms.update(clip.judgement.symptoms)
    return verdicts, symptoms


class Gallery:
    def __init__(self, settings: Settings) -> None:
        self.root = settings.outbox
        self.skip = Inbox(settings).is_ignored
        self._known: dict[str, tuple[Identity, Clip | None]] = {}
        self._lock = threading.Lock()
        self._sorted: list[Clip] | None = None
        self._walked_at = 0.0

    def clips(self) -> list[Clip]:
        """Every clip in the outbox, newest first; an outbox that cannot be read shows none. One walk
        serves every caller within REFRESH_S (pages, the API, the metrics scrape)."""
        with self._lock:
            now = time.monotonic()
            if self._sorted is None or now - self._walked_at >= REFRESH_S:
                self._sorted = self._walk()
                self._walked_at = now
            return self._sorted

    def _walk(self) -> list[Clip]:
        found: dict[str, tuple[Identity, Clip | None]] = {}
        try:
            for rel, st in metadata_files(self.root, self.skip):
                known = self._known.get(rel)
                found[rel] = known if known is not None and known[0] == identity(st) else \
                    (identity(st), self._read(rel, st.st_mtime_ns))
        except OSError:
            return []
        self._known = found
        clips = [clip for _, clip in found.values() if clip is not None]
        # A variant's rank moves as the rest of its set is published: placed afresh on every walk.
        placed = placings((c.rel, c.variant, c.meta.quality) for c in clips if c.variant is not None)
        clips = [replace(c, placing=placed[c.rel]) if c.rel in placed else c for c in clips]
        return sorted(clips, key=lambda c: (c.published_at, c.rel), reverse=True)

    def _read(self, rel: str, written_ns: int) -> Clip | None:
        """The clip, or None for a .json that is not a job's metadata (someone's file, a broken one)."""
        data = read_metadata(self.root / rel)
        return None if data is None else _clip(rel, data, written_ns)

    def found(self, query: str) -> list[Clip]:
        """The clips matching every word of `query` (name, prompt)."""
        words = query.lower().split()
        return [c for c in self.clips() if c.matches(words)] if words else self.clips()

    def page(self, query: str, page: int, size: int, verdict: str | None = None,
             symptom: str | None = None, variants: str | None = None) -> tuple[list[Clip], int]:
        """One page of the clips matching every word of `query` (name, prompt), with this verdict and
        symptom where given, and how many match; `variants` (a set's first job id): that set's
        variants alone, best first."""
        clips = [c for c in self.found(query) if c.judged_as(verdict, symptom)]
        if variants is not None:
            clips = sorted((c for c in clips if c.variant is not None and c.variant.of == variants),
                           key=lambda c: c.placing.rank if c.placing is not None else 0)
        start = max(0, (page - 1) * size)
        return clips[start:start + size], len(clips)
