"""Configuration errors in plain words, one line per problem: the setting, what it must be, the value,
and where that value was set (a line of the TOML file, or an I2V_* environment variable); never the
whole configuration. Also the warnings about settings that are valid but unwise."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from i2v_watcher.config.checks import SettingsConflict
from i2v_watcher.config.source import Loc, describe, env_name, env_variables
from i2v_watcher.errors import StartupError
from i2v_watcher.explain.core import Problem, Wording, did_you_mean, fields_at, place, plain, show, unwrap

if TYPE_CHECKING:
    from i2v_watcher.config.settings import Settings

SETTINGS_DOCS = "the settings reference, docs/reference/settings.md"
ENV_FIX = ("correct or unset {var} (where the service gets it: the unit's Environment= or EnvironmentFile=, "
           "or your shell)")
# Settings whose pattern says little to a person; what it allows, in words.
PATTERNS = {
    "worker_id": "letters, digits, '_', '.' and '-', starting with a letter or digit (at most 64)",
    "device": "cuda, cuda:N (e.g. cuda:1) or cpu",
    "output_group": "a group name or number",
    "output_mode": "three octal digits, e.g. 640 or 0640",
    "broker_url": "a redis:// or rediss:// URL, e.g. redis://queue-host:6379/0",
    "celery_queue": "letters, digits, '_', '.', ':' and '-', starting with a letter or digit (at most 100)",
}
NAME_REGEX = r"^[a-z0-9][a-z0-9_.-]{0,63}$"  # RegistryName: backends, presets, plugins' names
NAME_PATTERN = "a lower-case name: letters, digits, '_', '.' and '-', starting with a letter or digit"
# The configuration's words, on the translator's core: TOML's names for values, a closed range as
# `between 0 and 3600`, choices as TOML writes them, a number's kind with its range.
CONFIG = Wording(words={"text": "a string (in quotes)", "list": 'a list, e.g. ["a", "b"]',
                        "mapping": "a table", "path": "a path (in quotes)"},
                 closed_range="between {} and {}", patterns={**PATTERNS, NAME_REGEX: NAME_PATTERN},
                 quoted_choices=True, kind_with_range=True)
# Examples for a table given whole as JSON in one variable, and the same value set on its own.
TABLE_EXAMPLES = {"diffusion": ('{"dtype": "float16"}', "I2V_DIFFUSION__DTYPE=float16"),
                  "defaults": ('{"num_frames": 24}', "I2V_DEFAULTS__NUM_FRAMES=24"),
                  "models": ('{"svd": {"model": "/models/svd"}}', "I2V_MODELS__SVD__MODEL=/models/svd")}


class ConfigError(StartupError):
    """An invalid configuration: every problem found, one line each."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = [problem.text for problem in problems]
        text = lines[0] if len(lines) == 1 else f"{len(lines)} problems:\n  " + "\n  ".join(lines)
        super().__init__(f"invalid configuration: {text}")


def setting_name(loc: Loc) -> str:
    """`diffusion.dtype`; a list's item as `diffusion.oom_ladder (item 2).resolution`."""
    text = ""
    for part in loc:
        text += f" (item {part + 1})" if isinstance(part, int) else f"{'.' if text else ''}{part}"
    return text


def _allowed(err: ErrorDetails, field: FieldInfo | None, name: str) -> str:
    """What the setting must be, starting with `must`; or `: <the validator's own words>`."""
    must = CONFIG.must(err, field, name)
    if must is not None:
        return must
    if err["type"] == "value_error":
        text = str(err.get("ctx", {}).get("error", err["msg"]))
        return text if text.startswith("must") else f": {text}"
    text = err["msg"].replace("Input should be", "must be").replace("String should", "must")
    return text if text.startswith("must") else f": {text[:1].lower()}{text[1:]}"


def _merged(phrases: list[str]) -> str:
    """One union's alternatives as one phrase: `must be a string (in quotes) or a list, e.g. […]`."""
    phrases = list(dict.fromkeys(phrases))
    if len(phrases) > 1 and all(p.startswith("must be ") for p in phrases):
        return "must be " + " or ".join(p[len("must be "):] for p in phrases)
    return "; ".join(phrases) if phrases[0].startswith(":") else " and ".join(phrases)


def _suggestion(unknown: str, known: list[str] | None) -> str:
    if known is None:
        return ""
    return did_you_mean(unknown, known, lead="; ") or (
        f"; keys here: {', '.join(known)}" if len(known) <= 12 else f"; see {SETTINGS_DOCS}")


def _fix(setting: str, source: str | None, config_file: Path | str | None) -> str:
    if source is not None and source.startswith("from the environment variable "):
        return ENV_FIX.format(var=source.rsplit(" ", 1)[1])
    where = source or (f"in {config_file}" if config_file is not None else "in the config file")
    return f"correct {setting} {where} (see {SETTINGS_DOCS})" if setting else f"correct it {where}"


def _conflict(exc: SettingsConflict, config_file: Path | str | None, text: str) -> Problem:
    """A problem between settings: each one named with where it was set (or that it is the default)."""
    sources = {name: describe(name.split("."), config_file, text) for name in exc.settings}
    where = "; ".join(f"{name} {source or 'is the default'}" for name, source in sources.items())
    found = [re.fullmatch(r"in (.+) line (\d+)", source or "") for source in sources.values()]
    lines = [match.groups() for match in found if match]
    if len(sources) > 1 and len(lines) == len(sources) and len({file for file, _ in lines}) == 1:
        where = f"in {lines[0][0]} lines {', '.join(n for _, n in lines[:-1])} and {lines[-1][1]}"
    fixes = [_fix(name, source, config_file) for name, source in sources.items() if source]
    fix = "; or ".join(fixes) or f"set {' or '.join(exc.settings)} in {config_file or 'the config file'}"
    first = next(iter(sources.values()), None)
    return Problem(f"{exc} ({where})" if where else str(exc), fix, ".".join(exc.settings[:1]), first)


def _problem(model: type[BaseModel], errors: list[ErrorDetails], config_file: Path | str | None,
             text: str) -> Problem:
    """One line for every error pydantic reported at one place (a union reports one per member)."""
    first = errors[0]
    error = first.get("ctx", {}).get("error")
    if not first["loc"]:
        if isinstance(error, SettingsConflict):
            return _conflict(error, config_file, text)
        return Problem(str(error or first["msg"]), _fix("", None, config_file))
    found = place(model, first["loc"])
    loc, field = found.loc, found.info
    name = setting_name(loc)
    last = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if first["type"] == "missing":
        if len(loc) > 1:
            source = describe(loc[:-1], config_file, text)
            where = f" ({setting_name(loc[:-1])} is {source})" if source else ""
        else:
            source, where = None, f": add it to {config_file or 'the config file'} (or set {env_name(loc)})"
        return Problem(f"{name} is required but not set{where}", _fix(name, source, config_file), name,
                       source)
    source = describe(loc, config_file, text)
    where = source or (f"in {config_file}" if config_file is not None else "from the environment")
    if first["type"] == "extra_forbidden":
        return Problem(f"{name}: unknown key{_suggestion(str(last), fields_at(model, loc[:-1]))} ({where})",
                       _fix(name, source, config_file), name, source)
    allowed = _merged([_allowed(err, field, str(last)) for err in errors])
    got = "" if "(got " in allowed else f"got {show(first['input'])}, "
    message = f"{name}{'' if allowed.startswith(':') else ' '}{allowed} ({got}{where})"
    return Problem(message, _fix(name, source, config_file), name, source)


def explain(model: type[BaseModel], exc: ValidationError, config_file: Path | str | None,
            text: str) -> ConfigError:
    """Every error of a settings validation, one plain line each, with where each value was set."""
    groups: dict[tuple[str | int, ...], list[ErrorDetails]] = {}
    for err in exc.errors():
        groups.setdefault(tuple(place(model, err["loc"]).loc), []).append(err)
    problems = [_problem(model, errors, config_file, text) for errors in groups.values()]
    return ConfigError(sorted(problems, key=_in_file_order))


def _in_file_order(problem: Problem) -> tuple[int, int]:
    """The file's problems by line, then those from the environment, then the rest."""
    line = re.search(r" line (\d+)$", problem.source or "")
    if line:
        return 0, int(line.group(1))
    return (1 if problem.source else 2), 0


def _json_kind(model: type[BaseModel], var: str) -> str:
    """What the variable must hold: a JSON object for a table, a JSON array for a list."""
    field = place(model, var[len("I2V_"):].lower().split("__")).info
    annotation = unwrap(field.annotation) if field is not None else None
    if get_origin(annotation) in (list, set, tuple):
        item = unwrap(get_args(annotation)[0])
        return "a JSON array" + ("" if isinstance(item, type) and issubclass(item, BaseModel)
                                 else """, e.g. '["a", "b"]'""")
    if get_origin(annotation) is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return "a JSON object"
    return "valid JSON"


def _json_problem(model: type[BaseModel], var: str, value: str, cause: BaseException, field: str) -> Problem:
    if isinstance(cause, json.JSONDecodeError):
        place = f"column {cause.colno}" if cause.lineno == 1 else f"line {cause.lineno} column {cause.colno}"
        why = f"is not valid JSON: {cause.msg} at {place}"
    else:
        why = f"cannot be read: {cause}"
    hint = f"; it must hold {_json_kind(model, var)}"
    if var == f"I2V_{field.upper()}" and field in TABLE_EXAMPLES:
        example, single = TABLE_EXAMPLES[field]
        hint += f", e.g. {var}='{example}', or set one value with {single}"
    return Problem(f"{var}='{plain(value, 40)}' {why}{hint}", ENV_FIX.format(var=var), field,
                   f"from the environment variable {var}")


def explain_environment(model: type[BaseModel], exc: Exception) -> ConfigError:
    """pydantic-settings could not decode an I2V_* variable (malformed JSON for a table or list):
    which variable, and why."""
    found = re.search(r'field "([^"]+)"', str(exc))
    field = found.group(1) if found else ""
    cause = exc.__cause__ or exc
    variables = env_variables(field) if field else {}
    doc = getattr(cause, "doc", None)
    bad = {var: value for var, value in variables.items() if value == doc} or variables
    for other in model.model_fields:  # pydantic-settings stops at the first: name every other one too
        var, value = f"I2V_{other.upper()}", env_variables(other).get(f"I2V_{other.upper()}")
        if other != field and value is not None and _json_kind(model, var) != "valid JSON":
            try:
                json.loads(value)
            except ValueError:
                bad[var] = value
    if not bad:
        return ConfigError([Problem(f"an I2V_ variable for {field or 'a setting'} cannot be read: {cause}",
                                    "check the I2V_* environment variables", field)])
    return ConfigError([_json_problem(model, var, value, cause if var in variables else _why(value),
                                      field if var in variables else var[len("I2V_"):].lower())
                        for var, value in bad.items()])


def _why(value: str) -> BaseException:
    try:
        json.loads(value)
    except ValueError as exc:
        return exc
    return ValueError("not valid JSON")


def config_warnings(settings: Settings, config_file: Path | str | None) -> list[tuple[str, str]]:
    """(warning, fix) for each setting that is valid but likely a mistake."""
    found = []
    if settings.settle_s == 0:
        source = describe(("settle_s",), config_file, _read(config_file))
        where = f" ({source})" if source else ""
        found.append((f"settle_s = 0{where}: an image is taken the moment it appears, so one "
                      "still being copied in (a slow NAS client, a large upload) can be read half-written",
                      "set settle_s to a few seconds, longer than the longest pause of a copy (default 2)"))
    return found


def _read(config_file: Path | str | None) -> str:
    if config_file is None:
        return ""
    try:
        return Path(config_file).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def doctor_findings(exc: StartupError, config_file: Path | str) -> list[tuple[str, str, dict[str, Any]]]:
    """(message, fix, data) for each config problem doctor reports; data["readable"] is False when the
    file itself could not be read (doctor then exits with 2)."""
    if isinstance(exc, ConfigError):
        return [(p.text, p.hint, {"readable": True, "errors": [{"loc": p.setting, "msg": p.text,
                                                                  "source": p.source}]})
                for p in exc.problems]
    return [(str(exc), f"check that {config_file} exists, that this user can read it, and that it is "
             "valid TOML", {"readable": False})]
