"""Mistakes in plain words: pydantic's validation errors translated into one line per mistake,
`<field> must be … (got …)`, with the fix where one fits (quote a yes/no word, did you mean …?).

Used for sidecars, `backend_options`, `postprocess_overrides` and post-processing steps, and usable for
the config: `explain_errors` gives the lines, `describe_validation_error` one message of them all."""

from __future__ import annotations

import difflib
import json
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from i2v_watcher.errors import JobError

Loc = tuple[str | int, ...]
# The text each scalar was written as (`yes` for what YAML read as true), by its path as strings.
Written = Mapping[tuple[str, ...], str]


@dataclass(frozen=True)
class Problem:
    """One mistake in plain words, and a hint when the words do not already say how to fix it."""

    text: str
    hint: str = ""


def problems_error(problems: list[Problem], what: str, *, stage: str = "sidecar") -> JobError:
    """All the problems of one thing as one JobError: `invalid <what> (N problems): a; b; c`, the
    problems also one by one (JobError.problems) for a terminal to list them a line each."""
    hints = dict.fromkeys(p.hint for p in problems if p.hint)
    return JobError(f"{problems_heading(what, len(problems))}: " + "; ".join(p.text for p in problems),
                    stage=stage, hint="; ".join(hints), problems=[p.text for p in problems])


def problems_heading(what: str, count: int) -> str:
    return f"invalid {what}" + (f" ({count} problems)" if count > 1 else "")


def describe_validation_error(exc: ValidationError, what: str = "sidecar", *,
                              model: type[BaseModel] | None = None) -> str:
    """One message for all of a ValidationError: `invalid <what>: a; b` (the lines of explain_errors)."""
    return "invalid " + what + ": " + "; ".join(p.text for p in explain_errors(exc, model=model))


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """`, did you mean num_frames?` for a close match among choices (case aside), or the one choice that
    holds the word (`frames`, `guidance`); else ''."""
    by_folded = {choice.lower(): choice for choice in choices}
    folded = str(word).lower()
    close = difflib.get_close_matches(folded, list(by_folded), n=1, cutoff=0.75)
    holding = sorted((choice for choice in by_folded if len(folded) >= 2 and folded in choice), key=len)
    # One choice holds it, or the shortest is where all the others start (vertical-1080x1920[-nvenc]).
    alone = holding and all(choice.startswith(holding[0]) for choice in holding)
    found = close[0] if close else holding[0] if alone else None
    return f", did you mean {by_folded[found]}?" if found else ""


def show(value: object) -> str:
    """A value as a person wrote it: text in quotes (invisible characters escaped, long text cut),
    true/false/null as YAML spells them, lists and mappings short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        cut = value if len(value) <= 60 else value[:57] + "…"
        plain = cut.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in plain) + '"'
    if isinstance(value, (int, float)):
        return _number(value)
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "…"


def explain_errors(exc: ValidationError, *, model: type[BaseModel] | None = None, at: Loc = (),
                   written: Written | None = None, keys: str = "allowed keys") -> list[Problem]:
    """pydantic's errors as plain lines, one per mistake: a union's members in one line (`motion must
    be one of zoom-in, …, random (got "spin")`), ranges with both limits when `model` is given, an
    unknown key with a did-you-mean against the model's fields and `keys: …` as its hint, and a text
    field that YAML read as true/false, a number or null with the advice to quote it (`written`: what
    the value was written as). `at` is where the validated value sits (("backend_options",))."""
    context = _Context(model, at, written or {}, keys)
    problems = context.explain([dict(e) for e in exc.errors(include_url=False)])
    return list(dict.fromkeys(problems))


# A member of a union in an error's location: `literal['a','b']`, `constrained-str`, `list[int]`, `int`.
_TAG = re.compile(r"^(?:[a-z][a-z0-9_-]*\[.*\]|constrained-[a-z]+|int|float|str|bool|none|bytes)$")
_KINDS = {"string_type": "text", "int_type": "a whole number", "int_parsing": "a whole number",
          "int_from_float": "a whole number", "float_type": "a number", "float_parsing": "a number",
          "bool_type": "true or false", "bool_parsing": "true or false", "list_type": "a list",
          "tuple_type": "a list", "set_type": "a list", "dict_type": "a mapping (key: value)",
          "model_type": "a mapping (key: value)", "model_attributes_type": "a mapping (key: value)",
          "none_required": "null"}
_BOUNDS = {"greater_than_equal": "ge", "greater_than": "gt", "less_than_equal": "le", "less_than": "lt"}
_PATTERNS = {r"^[a-z0-9][a-z0-9_.-]{0,63}$": "a name of at most 64 lower-case letters, digits, '_', '.' "
                                            "and '-', starting with a letter or digit",
             r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$": "a name of at most 64 letters, digits, '_', '.' and "
                                                   "'-', starting with a letter or digit"}
_YES_NO = {"yes", "no", "on", "off", "true", "false", "y", "n"}


class _Context:
    def __init__(self, model: type[BaseModel] | None, at: Loc, written: Written, keys: str) -> None:
        self.model, self.at, self.written, self.keys = model, at, written, keys

    def explain(self, errors: list[dict[str, Any]]) -> list[Problem]:
        """The errors of one union (pydantic reports every member's) become one line; the rest one
        line each, in their order."""
        unions: dict[Loc, dict[str, list[dict[str, Any]]]] = {}
        order: list[Loc | dict[str, Any]] = []
        for error in errors:
            loc = tuple(error["loc"])
            index = next((i for i in range(1, len(loc)) if isinstance(loc[i], str) and _TAG.match(loc[i])),
                         None)
            if index is None:
                order.append(error)
                continue
            if loc[:index] not in unions:
                unions[loc[:index]] = {}
                order.append(loc[:index])
            unions[loc[:index]].setdefault(str(loc[index]), []).append(error)
        problems: list[Problem] = []
        for item in order:
            if isinstance(item, dict):
                problems.append(self.one(item))
            elif len(unions[item]) > 1:
                members = {tag: [{**e, "loc": item + tuple(e["loc"])[len(item) + 1:]} for e in errors]
                           for tag, errors in unions[item].items()}
                problems += self.union(item, members)
            else:  # one member: a name that looks like a union's label, not a union
                problems += [self.one(e) for member in unions[item].values() for e in member]
        return problems

    def union(self, loc: Loc, members: dict[str, list[dict[str, Any]]]) -> list[Problem]:
        """The member whose type the value had says what is wrong; when none had it, every member
        says what the value could have been: `must be one of a, b or a list`."""
        for errors in members.values():
            if any(len(e["loc"]) > len(loc) or e["type"] not in {*_KINDS, "literal_error"} for e in errors):
                return self.explain(errors)
        choices: list[str] = []
        kinds: list[str] = []
        words = True  # every choice a word, so that a yes/no or a number is told to be quoted
        for errors in members.values():
            for error in errors:
                if error["type"] == "literal_error":
                    choices += _choices(error)
                    words = words and _words(error)
                else:
                    kinds.append(_KINDS[error["type"]])
        wanted = [_one_of(list(dict.fromkeys(choices)))] if choices else []
        must = "must be " + " or ".join(dict.fromkeys(wanted + kinds))
        value = next(iter(members.values()))[0].get("input")
        # A yes/no word or a number where only text would do: say to quote it (not where a list would).
        texty = words and not set(kinds) - {"text"}
        return [self.line(loc, must, value, quote=texty)]

    def one(self, error: dict[str, Any]) -> Problem:
        loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
        ctx: dict[str, Any] = error.get("ctx") or {}
        if kind == "missing":
            return Problem(f"{self.where(loc)} is required")
        if kind in ("extra_forbidden", "invalid_key"):  # invalid_key: not text (`1: x`)
            names = _fields(self.model, loc[:-1]) or []
            return Problem(f"{self.where(loc)}: unknown key{did_you_mean(loc[-1], names)}",
                           hint=f"{self.keys}: {', '.join(names)}" if names else "")
        if kind in ("literal_error", "enum"):
            return self.line(loc, "must be " + _one_of(_choices(error)), value, quote=_words(error))
        if kind in _KINDS:
            return self.line(loc, f"must be {_KINDS[kind]}", value, quote=kind == "string_type")
        if kind in _BOUNDS or kind == "finite_number":
            if kind == "finite_number" or (isinstance(value, float) and not math.isfinite(value)):
                return self.line(loc, "must be a finite number", value)
            bounds = _bounds(self.model, loc) or {_BOUNDS[kind]: ctx.get(_BOUNDS[kind])}
            return self.line(loc, "must be " + range_words(bounds), value)
        if kind in ("string_too_long", "string_too_short", "too_long", "too_short"):
            unit = "characters" if kind.startswith("string") else "items"
            must = _length(kind, unit, ctx)
            size = f"{len(value)} {unit}" if isinstance(value, (str, list, dict)) else show(value)
            return self.line(loc, must, value, got="" if must.endswith("empty") else size)
        if kind == "string_pattern_mismatch":
            pattern = str(ctx.get("pattern", ""))
            return self.line(loc, "must be " + _PATTERNS.get(pattern, f"text matching {pattern}"), value)
        if kind == "multiple_of":
            return self.line(loc, f"must be a multiple of {_number(ctx.get('multiple_of'))}", value)
        reason = str(ctx.get("error", error["msg"])) if kind in ("value_error", "assertion_error") \
            else str(error["msg"])
        if not loc:  # the model's own check of its fields together: the reason names them
            return Problem(f"{self.where(loc)}: {reason}" if self.at else reason)
        if reason.startswith("must "):
            return self.line(loc, reason, value)
        said = repr(value) in reason or show(value) in reason  # the reason quotes the value already
        return Problem(f"{self.where(loc)}: {reason}" + ("" if said else f" (got {show(value)})"))

    def line(self, loc: Loc, must: str, value: object, *, quote: bool = False, got: str = "") -> Problem:
        """`<where> must … (got …)`; for a text field that YAML read as something else, the advice to
        quote it, with the value as it was written where that is known."""
        if quote and (value is None or isinstance(value, (bool, int, float))):
            return Problem(self.quote(loc, value))
        got = got or show(value)
        if isinstance(value, str) and _meant_unquoted(value, must):
            got += ", which is text: write it without quotes"
        return Problem(f"{self.where(loc)} {must} (got {got})")

    def quote(self, loc: Loc, value: object) -> str:
        full = self.at + loc
        text = self.written.get(tuple(str(part) for part in full))
        key = next((str(p) for p in reversed(full) if isinstance(p, str)), "")
        if isinstance(value, bool):
            read = f"{show(value)} (a yes/no, on/off or true/false word)"
        else:
            read = "null (nothing)" if value is None else "a number"
        if text is None:
            return f"{self.where(loc)} was read by YAML as {read}, not text: put it in quotes"
        example = f'{key}: "{text}"' if key else f'"{text}"'
        return f"{self.where(loc)}: {text} was read by YAML as {read}: put it in quotes, {example}"

    def where(self, loc: Loc) -> str:
        text = ""
        for part in self.at + loc:
            text += f"[{part}]" if isinstance(part, int) and text else (f".{part}" if text else str(part))
        return text or "the value"


def _one_of(choices: list[str]) -> str:
    return f"one of {', '.join(choices)}" if len(choices) > 1 else (choices or ["?"])[0]


def _meant_unquoted(text: str, must: str) -> bool:
    """Whether text in quotes was meant as the number or true/false that the field wants."""
    if must.endswith("true or false"):
        return text.strip().lower() in _YES_NO
    if not (must.endswith("number") or must.startswith("must be from") or "at least" in must
            or "at most" in must or "than" in must):
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def _words(error: dict[str, Any]) -> bool:
    """Whether a literal's choices are words (in quotes), which a YAML yes/no or number never is."""
    return "'" in str(error.get("ctx", {}).get("expected", ""))


def _choices(error: dict[str, Any]) -> list[str]:
    expected = str(error.get("ctx", {}).get("expected", ""))
    return [token.strip("'") for token in re.findall(r"'[^']*'|[^,\s]+", expected) if token != "or"]


def _length(kind: str, unit: str, ctx: dict[str, Any]) -> str:
    if kind.endswith("short"):
        least = ctx["min_length"]
        return "must not be empty" if least == 1 else f"must have at least {least} {unit}"
    return f"must have at most {ctx['max_length']} {unit}"


def range_words(bounds: dict[str, Any], both: str = "from {} to {}") -> str:
    """Limits (`ge`, `gt`, `le`, `lt`) in words: `from 1 to 512`, `more than 0 and at most 120`; `both`
    spells a closed range."""
    if "ge" in bounds and "le" in bounds:
        return both.format(_number(bounds["ge"]), _number(bounds["le"]))
    words = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}
    return " and ".join(f"{words[name]} {_number(bounds[name])}" for name in words if name in bounds)


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _field(model: type[BaseModel] | None, loc: Loc) -> FieldInfo | None:
    """The field at loc, through nested models (a config's tables); None where the path leaves them."""
    info: FieldInfo | None = None
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        info = model.model_fields[part]
        model = _model_in(info.annotation)
    return info


def _fields(model: type[BaseModel] | None, loc: Loc) -> list[str] | None:
    """The field names of the model at loc (() for the top), None where that is not a model."""
    if loc:
        info = _field(model, loc)
        model = _model_in(info.annotation) if info is not None else None
    return list(model.model_fields) if model is not None else None


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The model in an annotation such as `Defaults`, `Defaults | None`, `Annotated[Defaults, …]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        found = [m for arg in typing.get_args(annotation) if (m := _model_in(arg)) is not None]
        return found[0] if len(found) == 1 else None
    return None


def _bounds(model: type[BaseModel] | None, loc: Loc) -> dict[str, Any]:
    """Both limits of a numeric field (`from 1 to 512`), read from the model: an error names one."""
    info = _field(model, loc)
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
