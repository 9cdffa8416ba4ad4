"""Where a setting's value came from: an I2V_* environment variable, or a line of the TOML file.

tomllib gives no positions, so the file's text is scanned for table headers (`[diffusion]`,
`[[diffusion.oom_ladder]]`) and assignments (`settle_s =`, `diffusion.dtype =`, `"i2vgen-xl" =`); a
setting is placed on the line of the longest key path that leads to it. Multi-line strings are not
parsed, so a line inside one that looks like an assignment can be taken for one: the worst outcome is
a wrong line number in an error message, never a wrong value."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

ENV_PREFIX, ENV_NESTED = "I2V_", "__"
Loc = Sequence[str | int]

_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]")
_ASSIGN = re.compile(rf"^\s*({_DOTTED})\s*=")


def _keys(dotted: str) -> list[str]:
    keys = []
    for key in re.findall(_KEY, dotted):
        if key.startswith('"'):
            try:
                key = json.loads(key)
            except ValueError:
                key = key[1:-1]
        elif key.startswith("'"):
            key = key[1:-1]
        keys.append(key)
    return keys


def toml_keys(text: str) -> list[tuple[list[str | int], int]]:
    """Every table header and assignment of a TOML text: (its full key path, its 1-based line). The
    n-th `[[name]]` of an array of tables is the path name + [n]."""
    found: list[tuple[list[str | int], int]] = []
    table: list[str | int] = []
    arrays: dict[tuple[str | int, ...], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = list(_keys(header.group(2)))
            if header.group(1) == "[[":
                index = arrays.get(tuple(table), -1) + 1
                arrays[tuple(table)] = index
                table = [*table, index]
            found.append((table, number))
            continue
        assign = _ASSIGN.match(line)
        if assign:
            found.append(([*table, *_keys(assign.group(1))], number))
    return found


def toml_line(text: str, loc: Loc) -> int | None:
    """The line where the setting at `loc` (a pydantic error location) is set, or the table it lies
    in; None when the file does not mention it."""
    best: tuple[int, int] | None = None  # (length of the matching key path, line)
    for path, number in toml_keys(text):
        if len(path) <= len(loc) and list(loc[: len(path)]) == path and (best is None or len(path) > best[0]):
            best = (len(path), number)
    return None if best is None else best[1]


def _env(environ: Mapping[str, str]) -> dict[str, str]:
    # pydantic-settings reads the variables case-insensitively.
    return {name.upper(): value for name, value in environ.items() if name.upper().startswith(ENV_PREFIX)}


def env_name(loc: Loc) -> str:
    """The variable that sets the setting at `loc`: I2V_SETTLE_S, I2V_DIFFUSION__DTYPE."""
    names = [str(part) for part in loc if isinstance(part, str)]
    return ENV_PREFIX + ENV_NESTED.join(names).upper()


def _holds(value: object, rest: Loc) -> bool:
    """Whether a JSON value from a table variable sets the setting at `rest` below it (a list is
    replaced whole; a table is merged key by key with the file's)."""
    for part in rest:
        if isinstance(value, list):
            return True
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return True


def env_source(loc: Loc, environ: Mapping[str, str] | None = None) -> str | None:
    """The I2V_* variable the value at `loc` came from, or None when none set it."""
    env = _env(os.environ if environ is None else environ)
    names: list[str] = []
    for part in loc:
        if not isinstance(part, str):
            break
        names.append(part)
    for n in range(len(names), 0, -1):
        name = ENV_PREFIX + ENV_NESTED.join(names[:n]).upper()
        if name not in env:
            continue
        if n == len(loc):
            return name
        try:
            value = json.loads(env[name])
        except ValueError:
            return name
        if _holds(value, loc[n:]):
            return name
    return None


def env_variables(field: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The I2V_* variables that set a top-level setting or anything inside it."""
    name = ENV_PREFIX + field.upper()
    return {var: value for var, value in _env(os.environ if environ is None else environ).items()
            if var == name or var.startswith(name + ENV_NESTED)}


def describe(loc: Loc, config_file: Path | str | None, text: str) -> str | None:
    """Where the value at `loc` was set, in words: `from the environment variable I2V_X` or `in FILE
    line N`; None when neither mentions it (the default, or a line the scan cannot place)."""
    var = env_source(loc)
    if var is not None:
        return f"from the environment variable {var}"
    line = None if config_file is None else toml_line(text, loc)
    return None if line is None else f"in {config_file} line {line}"
