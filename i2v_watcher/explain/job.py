"""The job's wording of pydantic errors: one line per mistake, `<field> must be … (got …)`, with the fix
where one fits (quote a yes/no word, did you mean …?). Used for sidecars, `backend_options`,
`postprocess_overrides` and post-processing steps: `explain_errors` gives the lines,
`describe_validation_error` one message of them all, `problems_error` one JobError of them all."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from i2v_watcher.errors import JobError
from i2v_watcher.explain.core import (
    BOUNDS,
    KINDS,
    Loc,
    Problem,
    Wording,
    choices,
    did_you_mean,
    fields_at,
    is_finite_problem,
    one_of,
    place,
    show,
)

# The text each scalar was written as (`yes` for what YAML read as true), by its path as strings.
Written = Mapping[tuple[str, ...], str]
JOB = Wording(patterns={
    r"^[a-z0-9][a-z0-9_.-]{0,63}$": "a name of at most 64 lower-case letters, digits, '_', '.' and '-', "
                                    "starting with a letter or digit",
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$": "a name of at most 64 letters, digits, '_', '.' and '-', "
                                          "starting with a letter or digit"})
# A member of a union in an error's location: `literal['a','b']`, `constrained-str`, `list[int]`, `int`.
_TAG = re.compile(r"^(?:[a-z][a-z0-9_-]*\[.*\]|constrained-[a-z]+|int|float|str|bool|none|bytes)$")
_LENGTHS = ("string_too_long", "string_too_short", "too_long", "too_short")
_YES_NO = {"yes", "no", "on", "off", "true", "false", "y", "n"}


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
            if any(len(e["loc"]) > len(loc) or e["type"] not in {*KINDS, "literal_error"} for e in errors):
                return self.explain(errors)
        found: list[str] = []
        kinds: list[str] = []
        words = True  # every choice a word, so that a yes/no or a number is told to be quoted
        for errors in members.values():
            for error in errors:
                if error["type"] == "literal_error":
                    found += choices(error)
                    words = words and _words(error)
                else:
                    kinds.append(JOB.kind(error["type"]))
        wanted = [one_of(list(dict.fromkeys(found)))] if found else []
        must = "must be " + " or ".join(dict.fromkeys(wanted + kinds))
        value = next(iter(members.values()))[0].get("input")
        # A yes/no word or a number where only text would do: say to quote it (not where a list would).
        texty = words and not set(kinds) - {"text"}
        return [self.line(loc, must, value, quote=texty)]

    def one(self, error: dict[str, Any]) -> Problem:
        loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
        if kind == "missing":
            return Problem(f"{self.where(loc)} is required")
        if kind in ("extra_forbidden", "invalid_key"):  # invalid_key: not text (`1: x`)
            names = fields_at(self.model, loc[:-1]) or []
            return Problem(f"{self.where(loc)}: unknown key{did_you_mean(loc[-1], names)}",
                           hint=f"{self.keys}: {', '.join(names)}" if names else "")
        if kind in BOUNDS and is_finite_problem(error):
            return self.line(loc, "must be a finite number", value)
        must = JOB.must(error, place(self.model, loc).info)
        if must is not None and kind in _LENGTHS:
            unit = "characters" if kind.startswith("string") else "items"
            size = f"{len(value)} {unit}" if isinstance(value, (str, list, dict)) else show(value)
            return self.line(loc, must, value, got="" if must.endswith("empty") else size)
        if must is not None:
            quote = kind == "string_type" or (kind in ("literal_error", "enum") and _words(error))
            return self.line(loc, must, value, quote=quote)
        reason = str((error.get("ctx") or {}).get("error", error["msg"])) \
            if kind in ("value_error", "assertion_error") else str(error["msg"])
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
