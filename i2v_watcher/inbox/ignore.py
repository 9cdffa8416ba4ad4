"""The names every walk of the shared folders skips (`ignore_patterns`: AppleDouble twins, temporary
files), as one expression: built once per list of patterns, since the dashboard makes an Inbox for
every snapshot and translating the patterns costs more than its scan of an empty inbox."""

from __future__ import annotations

import fnmatch
import functools
import re


@functools.lru_cache(maxsize=8)
def ignored(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One expression for all the patterns (every name of a full walk is matched against it)."""
    return re.compile("|".join(fnmatch.translate(p) for p in patterns) or "(?!)")
