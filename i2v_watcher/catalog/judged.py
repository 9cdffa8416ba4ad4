"""A published clip's judgement as its metadata holds it (`quality`, written by the quality gate): the
verdict, the symptoms and the number of attempts, for what counts them (the daemon's metrics) and what
shows them (the dashboard's cards, filters and gauges).

Read leniently: the outbox's metadata is anyone's file (a hand edit, an older or newer daemon), so a
shape that is not the gate's gives no judgement, never an error, and only the known verdicts and
symptoms are kept (a label or a filter never carries a stranger's string)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from i2v_watcher.judge.score import SYMPTOMS

VERDICTS = ("pass", "warn", "fail")
# The symptoms in a person's words, for the cards and the filter.
WORDS = {"no_motion": "no motion", "frozen": "frozen frames", "flicker": "flicker", "black": "black frames",
         "drift": "drift from the image", "blur": "blur"}


@dataclass(frozen=True)
class Judged:
    verdict: str  # one of VERDICTS
    symptoms: tuple[str, ...]  # known ones only, in SYMPTOMS' order
    attempts: int  # how many were generated (1 without a re-roll)


def judged(quality: Mapping[str, Any] | None) -> Judged | None:
    """The judgement in a metadata's `quality`, or None: not judged (older clips), or not in the
    gate's shape."""
    if not isinstance(quality, Mapping) or quality.get("verdict") not in VERDICTS:
        return None
    named = quality.get("symptoms")
    found = {s for s in named if isinstance(s, str)} if isinstance(named, list) else set()
    tries = quality.get("attempts")
    return Judged(verdict=quality["verdict"], symptoms=tuple(s for s in SYMPTOMS if s in found),
                  attempts=max(1, len(tries)) if isinstance(tries, list) else 1)


def words(symptom: str) -> str:
    return WORDS.get(symptom, symptom.replace("_", " "))
