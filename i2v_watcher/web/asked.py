"""What a gallery request asks for: its query string read into the catalog's Filters, each value
checked (a verdict, symptom, backend, model or worker the index knows; a set's job id; a date), and
anything else ignored and said so on the page, never an error."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

from i2v_watcher.catalog.index import Catalog, Filters
from i2v_watcher.catalog.judged import VERDICTS
from i2v_watcher.catalog.ranks import JOB_ID
from i2v_watcher.judge.score import SYMPTOMS

CHOSEN = ("backend", "model", "worker")  # the filters whose choices the index lists
MAX_QUERY = 200


class Asked:
    def __init__(self, params: Mapping[str, str], catalog: Catalog) -> None:
        self.ignored: list[str] = []
        self.choices = {column: catalog.values(column) for column in CHOSEN}
        self.chosen = {column: _one_of(params.get(column), column, tuple(values), self.ignored)
                       for column, values in self.choices.items()}
        since, until = _day(params.get("since"), "since", self.ignored), \
            _day(params.get("until"), "until", self.ignored, after=True)
        self.since = params.get("since", "") if since else ""  # as asked, for the form and the links
        self.until = params.get("until", "") if until else ""
        self.filters = Filters(query=params.get("q", "")[:MAX_QUERY],
                               verdict=_one_of(params.get("verdict"), "verdict", VERDICTS, self.ignored),
                               symptom=_one_of(params.get("symptom"), "symptom", SYMPTOMS, self.ignored),
                               variants=_variants(params.get("variants"), self.ignored),
                               since=since, until=until, **self.chosen)

    @property
    def kept(self) -> dict[str, str]:
        """The query string of the filters in force, for the links to the other pages."""
        f = self.filters
        return {k: v for k, v in (("q", f.query), ("verdict", f.verdict), ("symptom", f.symptom),
                                  ("variants", f.variants), *self.chosen.items(), ("since", self.since),
                                  ("until", self.until)) if v}


def _one_of(value: str | None, name: str, allowed: tuple[str, ...], ignored: list[str]) -> str | None:
    """A filter's value when it is one of `allowed`; anything else is ignored, and said so on the page."""
    if not value:
        return None
    if value in allowed:
        return value
    ignored.append(f"{name}={value[:40]!r} (not one of {', '.join(allowed)})")
    return None


def _day(value: str | None, name: str, ignored: list[str], *, after: bool = False) -> str | None:
    """A date filter (YYYY-MM-DD) as the published_at bound it stands for: the day's start, or for
    `until` (`after`) the next day's, so that the day itself is included; else ignored, and said so."""
    if not value:
        return None
    try:
        day = date.fromisoformat(value[:10]) if len(value) == 10 else None
    except ValueError:
        day = None
    if day is None:
        ignored.append(f"{name}={value[:40]!r} (not a date: YYYY-MM-DD)")
        return None
    return (day + timedelta(days=1) if after else day).isoformat()


def _variants(value: str | None, ignored: list[str]) -> str | None:
    """The `variants` filter: a set's first job id, else ignored and said so."""
    if not value:
        return None
    if JOB_ID.fullmatch(value):
        return value
    ignored.append(f"variants={value[:40]!r} (not a job id)")
    return None
