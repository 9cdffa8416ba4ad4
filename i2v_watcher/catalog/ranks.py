"""Where a published variant stands among its set (`variants: N`, `keep: all`): "variant 2 of 3 · rank 1".

The variants of a set are separate jobs that finish when they finish, maybe on different workers, so
no job knows its rank when it publishes: the rank is computed from the set as the outbox holds it now,
never stored in a metadata file (it would be stale, and rewriting published files from whichever
worker finishes last would race the others). It is provisional until every variant of the set is
published; a variant that failed leaves its set provisional for good.

The order is the quality gate's for `keep: best` (judge.score.rank: fewer symptoms, then less drift),
then the variant's index, as the gate's first best attempt wins a tie. A variant the gate did not judge
comes after every judged one. Read leniently, like judged.py: a `variant` of another shape is no
variant, never an error."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from i2v_watcher.catalog.judged import judged
from i2v_watcher.job.records import JOB_ID_PATTERN
from i2v_watcher.job.spec import MAX_VARIANTS
from i2v_watcher.judge.score import SYMPTOMS, rank

K = TypeVar("K", bound=Hashable)
JOB_ID = re.compile(JOB_ID_PATTERN, re.ASCII)
UNJUDGED = (len(SYMPTOMS) + 1, math.inf)  # after every judged variant, however many symptoms it has


@dataclass(frozen=True)
class Variant:
    """A published clip's `variant` (run.variants): the `index`-th of `count` clips of one image, the
    set named by the first variant's job id (`of`) and inbox key (`name`)."""

    of: str
    name: str
    index: int
    count: int


@dataclass(frozen=True)
class Placing:
    rank: int  # 1: the best of the set's variants published so far
    published: int  # how many of the set's variants are published (distinct indices)
    count: int  # how many the set has

    @property
    def provisional(self) -> bool:
        """Whether a variant still to come may change the rank."""
        return self.published < self.count


def variant(data: Any) -> Variant | None:
    """The `variant` of a published metadata, or None: not a variant, or not in the daemon's shape."""
    if not isinstance(data, Mapping):
        return None
    of, name, index, count = (data.get(key) for key in ("of", "name", "index", "count"))
    if not (isinstance(of, str) and JOB_ID.fullmatch(of) and isinstance(name, str)):
        return None
    index, count = _whole(index), _whole(count)
    if index is None or count is None or not 1 <= index <= count <= MAX_VARIANTS:
        return None
    return Variant(of=of, name=name, index=index, count=count)


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def order(one: Variant, quality: Mapping[str, Any] | None) -> tuple[int, float, int]:
    """A variant's place in the best-first order of its set (lower first)."""
    found = judged(quality)
    if found is None or quality is None:
        return (*UNJUDGED, one.index)
    scores = quality.get("scores")
    drift = scores.get("drift") if isinstance(scores, Mapping) else None
    known = isinstance(drift, int | float) and not isinstance(drift, bool) and math.isfinite(drift)
    return (*rank({"symptoms": found.symptoms, "scores": {"drift": drift if known else math.inf}}), one.index)


def ranked(members: Iterable[tuple[K, Variant, Mapping[str, Any] | None]]) -> list[tuple[K, Placing]]:
    """The published variants of one set (a key of the caller's, the variant, its metadata's
    `quality`), best first, each with its placing. A variant published twice (a retry) counts once
    towards `published` and is ranked like any other; the caller's keys break exact ties."""
    listed = sorted(members, key=lambda member: (order(member[1], member[2]), str(member[0])))
    count = max((one.count for _, one, _ in listed), default=0)
    published = len({one.index for _, one, _ in listed})
    return [(key, Placing(rank=place, published=published, count=count))
            for place, (key, _, _) in enumerate(listed, start=1)]


def placings(clips: Iterable[tuple[K, Variant, Mapping[str, Any] | None]]) -> dict[K, Placing]:
    """Every variant's placing in its own set, the sets told apart by `of`."""
    sets: dict[str, list[tuple[K, Variant, Mapping[str, Any] | None]]] = defaultdict(list)
    for member in clips:
        sets[member[1].of].append(member)
    return {key: placing for members in sets.values() for key, placing in ranked(members)}
