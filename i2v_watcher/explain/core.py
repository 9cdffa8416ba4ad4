"""The translator's core: what a pydantic error means, whatever the words. One `Problem`, one value
printer (`show`), one table of error kinds, one did-you-mean, the limits of a field read from its
model, and `Wording`, which turns one error into `must be …`. Two wordings are built on it: the job's
(explain/job.py: sidecars, backend_options, post-processing steps) and the configuration's
(config/errors.py)."""

from __future__ import annotations

import difflib
import json
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One mistake in plain words, and a hint when the words do not already say how to fix it (for a
    setting: what to change, and where). `setting` and `source` say which setting it is and where its
    value was set (a line of the config file, an environment variable)."""

    text: str
    hint: str = ""
    setting: str = ""
    source: str | None = None


def did_you_mean(word: object, choices: Iterable[str], *, lead: str = ", ", most: int = 1,
                 shown: Callable[[str], str] = str) -> str:
    """`<lead>did you mean num_frames?` for the closest of choices (case, and `_` against `-`, aside),
    or the one choice that holds the word (`frames`, `guidance`); up to `most` of them (`a or b`), each
    written by `shown`; '' when none is close."""
    by_folded = {_folded(choice): choice for choice in choices}
    folded = _folded(str(word))
    close = difflib.get_close_matches(folded, list(by_folded), n=most, cutoff=0.75)
    holding = sorted((choice for choice in by_folded if len(folded) >= 2 and folded in choice), key=len)
    # One choice holds it, or the shortest is where all the others start (vertical-1080x1920[-nvenc]).
    if not close and holding and all(choice.startswith(holding[0]) for choice in holding):
        close = holding[:1]
    return f"{lead}did you mean {' or '.join(shown(by_folded[c]) for c in close)}?" if close else ""


def _folded(text: str) -> str:
    return text.lower().replace("_", "-")


def show(value: object) -> str:
    """A value as a person wrote it: text in quotes (invisible characters escaped, long text cut),
    true/false/null as YAML and TOML spell them, numbers as written, lists and mappings short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return '"' + plain(value.replace("\\", "\\\\").replace('"', '\\"')) + '"'
    if isinstance(value, (int, float)):
        return number(value)
    return plain(json.dumps(value, ensure_ascii=False, default=str))


def plain(text: str, limit: int = 60) -> str:
    """Text as it can be shown on one line: cut short (ending in …) when longer than `limit`, its invisible
    characters escaped (\\u200b), so that a message never hides or carries control characters."""
    cut = text if len(text) <= limit else text[:limit - 3] + "…"
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in cut)


def number(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


# What pydantic's error types ask for, by kind; each wording has its words for the kinds.
KINDS = {"string_type": "text", "int_type": "whole", "int_parsing": "whole", "int_from_float": "whole",
         "float_type": "number", "float_parsing": "number", "finite_number": "finite", "bool_type": "bool",
         "bool_parsing": "bool", "list_type": "list", "tuple_type": "list", "set_type": "list",
         "dict_type": "mapping", "model_type": "mapping", "model_attributes_type": "mapping",
         "none_required": "null", "path_type": "path"}
NUMBER_KINDS = ("whole", "number", "finite")
BOUNDS = {"greater_than_equal": "ge", "greater_than": "gt", "less_than_equal": "le", "less_than": "lt"}
WORDS = {"text": "text", "whole": "a whole number", "number": "a number", "finite": "a finite number",
         "bool": "true or false", "list": "a list", "mapping": "a mapping (key: value)", "null": "null",
         "path": "a path"}


@dataclass(frozen=True)
class Wording:
    """How one audience is told what a value must be: the words for each kind of value, a closed range
    (`from 1 to 512`, `between 0 and 3600`), the choices of a literal, the meaning of a pattern (by the
    pattern or by the field's name), and whether a number's kind comes with its range."""

    words: Mapping[str, str] = field(default_factory=dict)
    closed_range: str = "from {} to {}"
    patterns: Mapping[str, str] = field(default_factory=dict)
    quoted_choices: bool = False
    kind_with_range: bool = False

    def must(self, error: Mapping[str, Any], info: FieldInfo | None, name: str = "") -> str | None:
        """`must …` for an error about a value's kind, range, choices, length, pattern or step; None
        for the others (missing, unknown keys, a validator's own words), which each wording says."""
        kind, ctx = error["type"], error.get("ctx") or {}
        if kind in KINDS:
            limits = self.range(info, {}) if self.kind_with_range and KINDS[kind] in NUMBER_KINDS else ""
            return f"must be {self.kind(kind)}" + (f" {limits}" if limits else "")
        if kind in BOUNDS:
            broken = {BOUNDS[kind]: ctx.get(BOUNDS[kind])}  # the field's both limits, else the one broken
            return "must be " + (self.range(info, {}) or self.range(None, broken))
        if kind in ("literal_error", "enum"):
            return "must be " + self.one_of(error)
        if kind in ("string_too_long", "string_too_short", "too_long", "too_short"):
            unit = "characters" if kind.startswith("string") else "items"
            if kind.endswith("long"):
                return f"must have at most {ctx['max_length']} {unit}"
            least = ctx["min_length"]
            return "must not be empty" if least == 1 else f"must have at least {least} {unit}"
        if kind == "string_pattern_mismatch":
            pattern = str(ctx.get("pattern", ""))
            return "must be " + (self.patterns.get(name) or self.patterns.get(pattern)
                                 or f"text matching {pattern}")
        if kind == "multiple_of":
            return f"must be a multiple of {number(ctx.get('multiple_of'))}"
        return None

    def kind(self, error_type: str) -> str:
        """What an error of this type (one of KINDS) asked for: `a whole number`, `a table`."""
        return self.words.get(KINDS[error_type], WORDS[KINDS[error_type]])

    def range(self, info: FieldInfo | None, bounds: Mapping[str, Any]) -> str:
        """A field's limits (read from the model: an error names only the one it broke), in words."""
        return range_words({**bounds, **limits(info)}, self.closed_range)

    def one_of(self, error: Mapping[str, Any]) -> str:
        if self.quoted_choices:
            return "one of " + str((error.get("ctx") or {}).get("expected", "")).replace("'", '"')
        return one_of(choices(error))


def one_of(found: list[str]) -> str:
    return f"one of {', '.join(found)}" if len(found) > 1 else (found or ["?"])[0]


def choices(error: Mapping[str, Any]) -> list[str]:
    expected = str((error.get("ctx") or {}).get("expected", ""))
    return [token.strip("'") for token in re.findall(r"'[^']*'|[^,\s]+", expected) if token != "or"]


def range_words(bounds: Mapping[str, Any], both: str = "from {} to {}") -> str:
    """Limits (`ge`, `gt`, `le`, `lt`) in words: `from 1 to 512`, `more than 0 and at most 120`; `both`
    spells a closed range."""
    if "ge" in bounds and "le" in bounds:
        return both.format(number(bounds["ge"]), number(bounds["le"]))
    words = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}
    return " and ".join(f"{words[name]} {number(bounds[name])}" for name in words if name in bounds)


def is_finite_problem(error: Mapping[str, Any]) -> bool:
    """An infinite or NaN value broke a bound: it is not a number to compare, so say so."""
    value = error.get("input")
    return error["type"] == "finite_number" or (isinstance(value, float) and not math.isfinite(value))


@dataclass(frozen=True)
class Place:
    """Where an error's location leads in the model: the location without pydantic's union-member tags
    (`constrained-str`, `list[…]`), the field at its end (None where the path leaves the models) and the
    annotation there (None where the model says nothing)."""

    loc: list[str | int]
    info: FieldInfo | None
    annotation: Any


def place(model: type[BaseModel] | None, loc: Sequence[str | int]) -> Place:
    annotation: Any = model
    clean: list[str | int] = []
    info: FieldInfo | None = None
    for part in loc:
        annotation, union = _unwrap(annotation)
        if union and isinstance(part, str):
            continue  # pydantic names the union member it tried; not a key of the user's
        clean.append(part)
        info = None
        members = typing.get_args(annotation) if union else (annotation,)
        if isinstance(part, int):
            lists = [m for m in members if typing.get_origin(m) in (list, tuple, set)]
            annotation = typing.get_args(lists[0])[0] if lists else None
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(part)
            annotation = info.annotation if info is not None else None
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        else:
            annotation = None
    return Place(clean, info, annotation)


def fields_at(model: type[BaseModel] | None, loc: Sequence[str | int]) -> list[str] | None:
    """The keys of the model at loc (() for the top), None where no model is (an unknown key's list)."""
    found = unwrap(place(model, loc).annotation)
    union = typing.get_origin(found) in (typing.Union, types.UnionType)
    models = [m for m in (typing.get_args(found) if union else (found,))
              if isinstance(m, type) and issubclass(m, BaseModel)]
    return list(models[0].model_fields) if len(models) == 1 else None


def unwrap(annotation: Any) -> Any:
    """The annotation without Annotated and Optional (a union of several stays a union)."""
    return _unwrap(annotation)[0]


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The annotation without Annotated and Optional; and whether it is still a union of several."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) > 1:
                return annotation, True
            annotation = members[0]
        else:
            return annotation, False


def limits(info: FieldInfo | None) -> dict[str, Any]:
    """A numeric field's limits (`ge`, `gt`, `le`, `lt`), from its metadata and its annotation."""
    found: dict[str, Any] = {}
    if info is None:
        return found
    pending: list[object] = [*info.metadata, info.annotation]
    while pending:
        item = pending.pop()
        if isinstance(item, (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt)):
            name = type(item).__name__.lower()
            found.setdefault(name, getattr(item, name))
        elif isinstance(item, FieldInfo):
            pending += item.metadata
        elif typing.get_origin(item) in (typing.Union, types.UnionType, typing.Annotated):
            pending += typing.get_args(item)
        elif hasattr(item, "__metadata__"):
            pending += list(item.__metadata__)
    return found
