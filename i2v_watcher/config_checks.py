"""Checks of the configuration that span several settings or must try a value out: the output
template rendered with sample values, and the five folders kept apart."""

from __future__ import annotations

import itertools
import os
import string
from pathlib import Path

from i2v_watcher.spec import check_output_name

TEMPLATE_FIELDS = frozenset({"stem", "date", "time", "seed", "preset", "backend", "job_id"})
# Values of the shape a job gives each template field: the template is tried with them at load time,
# so a template that can never make a plain file name fails at start-up, not after the GPU work.
TEMPLATE_SAMPLE = {"stem": "photo", "date": "20260101", "time": "120000", "seed": 42, "preset": "archive",
                   "backend": "preview", "job_id": "20260101T120000Z-0123abcd"}


def check_output_template(template: str) -> str:
    """Only plain `{field}`s: a conversion, format spec, attribute or index could reach into the
    values' objects or pad a name past any limit. The result must be a plain file name."""
    if not template.strip():
        raise ValueError("must not be empty")
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            raise ValueError(f"unknown field {{{name}}}; allowed: "
                             f"{', '.join('{' + f + '}' for f in sorted(TEMPLATE_FIELDS))} "
                             "(plain fields only: no attributes, indexes, conversions or format specs)")
        if spec or conversion:
            raise ValueError(f"field {{{name}}} has a conversion or format spec; only plain "
                             f"{{{name}}} is allowed")
    sample = template.format(**TEMPLATE_SAMPLE)
    try:
        check_output_name(sample)
    except ValueError as exc:
        raise ValueError(f"gives the output name {sample!r} for a sample job, which is not usable: {exc}") \
            from exc
    return template


def _describe_folder(name: str, path: Path, real: str) -> str:
    return f"{name} ({path})" if str(path) == real else f"{name} ({path} -> {real})"


def check_folders_apart(folders: dict[str, Path]) -> None:
    """No folder may be another, or lie inside another: a scan or clean-up of the outer one would
    take the inner one's files for its own (jobs claimed twice, outputs pruned). Real paths, so a
    symbolic link does not hide the nesting."""
    reals = {name: os.path.realpath(path) for name, path in folders.items()}
    for first, second in itertools.combinations(folders, 2):
        a, b = Path(reals[first]), Path(reals[second])
        one = _describe_folder(first, folders[first], reals[first])
        other = _describe_folder(second, folders[second], reals[second])
        if a == b:
            raise ValueError(f"{one} and {other} are the same folder: inbox, outbox, failed, done and "
                             "work must be five different folders")
        if b in a.parents:
            raise ValueError(f"{one} must not lie inside {other}")
        if a in b.parents:
            raise ValueError(f"{other} must not lie inside {one}")
