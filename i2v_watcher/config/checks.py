"""Checks of the configuration that span several settings or must try a value out: the output
template rendered with sample values, the five folders kept apart, the presets and steps named, and
the web listen address."""

from __future__ import annotations

import itertools
import os
import string
from pathlib import Path

from i2v_watcher.job.spec import check_output_name

TEMPLATE_FIELDS = frozenset({"stem", "date", "time", "seed", "preset", "backend", "job_id"})
# Values of the shape a job gives each template field: the template is tried with them at load time,
# so a template that can never make a plain file name fails at start-up, not after the GPU work.
TEMPLATE_SAMPLE = {"stem": "photo", "date": "20260101", "time": "120000", "seed": 42, "preset": "archive",
                   "backend": "preview", "job_id": "20260101T120000Z-0123abcd"}


class SettingsConflict(ValueError):
    """A problem that lies between settings (or that only the whole configuration shows): the
    settings it names are reported each with where it was set."""

    def __init__(self, message: str, *settings: str) -> None:
        super().__init__(message)
        self.settings = settings


def host_and_port(listen: str) -> tuple[str, int]:
    """`host:port` (`[::1]:8080` for IPv6) as a host and a port number; ValueError otherwise."""
    host, sep, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("must be host:port, e.g. 127.0.0.1:8080, 0.0.0.0:8080 or [::1]:8080")
    return host, int(port)


def host_name_and_port(entry: str) -> tuple[str, int | None]:
    """A Host header's value, or an entry of web_allowed_hosts: `name`, `name:port`, `[::1]:port` or
    `::1`, as a lower-case name without a final dot (or brackets), and the port (None: none given).
    ValueError for anything else."""
    text = entry.strip().lower()
    port: int | None = None
    if text.startswith("["):
        name, close, rest = text[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise ValueError(f"{entry!r}: a bracketed IPv6 address must end in ] or ]:port")
        text, port_text = name, rest[1:] if rest else None
    elif text.count(":") == 1:
        text, port_text = text.split(":")
    else:
        port_text = None  # a bare name, or a bare IPv6 address (several colons)
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    name = text.rstrip(".")
    if not name or any(c.isspace() or c in "/\\@?#" for c in name):
        raise ValueError(f"{entry!r}: not a host name (e.g. dashboard.example.net or 10.0.5.7:8080)")
    return name, port


def check_presets_known(wanted: list[str], presets: list[str], overridable: dict[str, list[str]]) -> None:
    """The default presets exist, and postprocess_overridable names real steps and their fields."""
    from i2v_watcher.steps import step_class

    missing = [p for p in wanted if p not in presets]
    if missing:
        raise SettingsConflict(f"defaults.postprocess names unknown preset(s) {', '.join(missing)}; "
                               f"presets: {', '.join(presets)}", "defaults.postprocess")
    for step, fields in overridable.items():
        try:
            known = step_class(step).model_fields
        except ValueError as exc:
            raise SettingsConflict(f"postprocess_overridable: {exc}", f"postprocess_overridable.{step}") \
                from None
        unknown = [f for f in fields if f not in known]
        if unknown:
            raise SettingsConflict(f"postprocess_overridable: step {step!r} has no field(s) "
                                   f"{', '.join(unknown)}", f"postprocess_overridable.{step}")


def check_draft_template(template: str) -> str:
    """`draft_name_template`: `{name}` (the name the clip would have as a final) once, plain, and
    something besides it, so that a draft never takes its final's name."""
    fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
              if name is not None]
    if fields != [("name", "", None)]:
        raise ValueError("must hold the plain field {name} once, and no other field")
    if template == "{name}":
        raise ValueError("must add something to {name} (e.g. {name}.draft): a draft must not take the "
                         "name of its final")
    sample = template.format(name="fox")
    try:
        check_output_name(sample)
    except ValueError as exc:
        raise ValueError(f"gives the output name {sample!r}, which is not usable: {exc}") from exc
    return template


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
            raise SettingsConflict(f"{one} and {other} are the same folder: inbox, outbox, failed, done "
                                   "and work must be five different folders", first, second)
        if b in a.parents:
            raise SettingsConflict(f"{one} must not lie inside {other}", first, second)
        if a in b.parents:
            raise SettingsConflict(f"{other} must not lie inside {one}", second, first)


def check_swap_backends(resident: list[str], swap: list[str], coordination: str) -> None:
    """`swap_backends`: none of them also resident (a model is either kept or swapped), and folder
    coordination only (a Celery worker consumes the queues of the models it keeps)."""
    both = [name for name in swap if name in resident]
    if both:
        raise SettingsConflict(f"{', '.join(both)} is both loaded resident (`backend`/`backends`) and in "
                               "swap_backends: list each backend in one of them", "swap_backends", "backends")
    if swap and coordination == "celery":
        raise SettingsConflict('swap_backends works with coordination = "folders" only: a Celery worker '
                               "consumes the queues of the backends it keeps loaded; list them in "
                               "`backends` (each on a worker whose GPU holds them), or leave swap_backends "
                               "empty", "swap_backends", "coordination")
