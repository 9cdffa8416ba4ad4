"""MkDocs hook: the reference pages, generated from the code at every build, so they cannot drift.

A page asks for a generated part with a marker on a line of its own:

- `<!-- reference:settings -->`: every setting of `i2v_watcher.config.settings.Settings` (type, limits,
  default, environment variable), described by the comment block above its line in config/i2v-watcher.toml;
- `<!-- reference:sidecar -->`: every field of `i2v_watcher.job.spec.JobSpec`, from its `description`;
- `<!-- reference:backend-options -->` and `<!-- reference:backends -->`: each backend's options model,
  and the fields each backend honours and ignores;
- `<!-- reference:cli -->` (the command overview), `<!-- reference:cli:NAME -->` (one command's usage and
  options, from the argparse parser of `i2v_watcher.cli`) and `<!-- reference:cli-others -->` (every
  command that no `cli:NAME` marker of the page names, so a new command is never left out);
- `<!-- reference:steps -->` and `<!-- reference:presets -->`: the post-processing step registry and the
  shipped presets;
- `<!-- reference:example-config -->`: config/i2v-watcher.toml itself;
- `<!-- reference:quality-levels -->`: what each shipped quality level sets for each diffusion backend, its
  denoiser passes and its work against final (i2v_watcher/backends/levels.py).

`on_files` adds one page that is not in docs/: operations/deploy.md, which is deploy/README.md (the
install procedure, kept beside the unit files) with its links made to work inside the site. The pages
link to deploy/README.md itself, so that their links work where they are read as Markdown files; here
those links are pointed at the page.

A block between `<!-- markdown-only -->` and `<!-- /markdown-only -->` is for those who read the Markdown
files (where the generated parts are missing): it is left out of the site.

Anything the code has but the docs cannot describe (a setting without a comment in the example config,
a sidecar field without a description) is logged as a warning, which `mkdocs build --strict` turns into
a failed build.
"""

from __future__ import annotations

import argparse
import html
import inspect
import json
import logging
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # a plain `mkdocs build` from a checkout without the package installed
    sys.path.insert(0, str(REPO))

EXAMPLE_CONFIG = REPO / "config" / "i2v-watcher.toml"
DEPLOY_README = REPO / "deploy" / "README.md"
DEPLOY_PAGE = "operations/deploy.md"
MARKDOWN_ONLY = re.compile(r"^<!-- markdown-only -->\n.*?^<!-- /markdown-only -->\n", re.M | re.S)
MARKER = re.compile(r"^<!-- reference:([a-z-]+)(?::([A-Za-z0-9_.-]+))? -->$", re.MULTILINE)
log = logging.getLogger("mkdocs.hooks.reference")
DASH, MINUS = "\u2013", "\u2212"  # a range's en dash; the minus sign of 2⁶³ - 1


# ---- MkDocs events -------------------------------------------------------------------------------

def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    files.append(File.generated(config, DEPLOY_PAGE, content=deploy_page()))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    markdown = to_deploy_page(MARKDOWN_ONLY.sub("", markdown), page.file.src_uri)
    named = {name for kind, name in MARKER.findall(markdown) if kind == "cli" and name}

    def replace(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2)
        if kind == "cli" and name:
            return cli_command(name)
        if kind == "cli-others":
            return cli_others(named)
        render = RENDERERS.get(kind)
        if render is None:
            log.warning("%s: unknown reference marker %r", page.file.src_uri, match.group(0))
            return match.group(0)
        return render()

    return MARKER.sub(replace, markdown)


# ---- Markdown helpers ----------------------------------------------------------------------------

def code(text: object) -> str:
    """An inline code span that is safe in a table cell (a `|` would split the cell)."""
    value = str(text)
    if "|" in value:
        return "<code>" + html.escape(value).replace("|", "&#124;") + "</code>"
    ticks = "``" if "`" in value else "`"
    pad = " " if "`" in value else ""
    return f"{ticks}{pad}{value}{pad}{ticks}"


def prose(text: str) -> str:
    """Plain text from a comment or a help string, escaped for Markdown (and for a table cell); its
    `code spans` stay code spans."""
    parts = re.split(r"(`[^`\n]+`)", text)
    return "".join(code(part[1:-1]) if index % 2 else
                   re.sub(r"([\\*\[\]|_])", r"\\\1", html.escape(part, quote=False))
                   for index, part in enumerate(parts))


def number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and value == 2**63 - 1:
        return "2⁶³" + MINUS + "1"
    return str(value)


def toml(value: Any) -> str:
    """A default value as one would write it in the TOML file."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml(item) for item in value) + "]"
    if isinstance(value, dict):
        items = [f"{key if re.fullmatch(r'[A-Za-z0-9_-]+', key) else json.dumps(key)} = {toml(item)}"
                 for key, item in value.items() if item is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    return json.dumps(value)


# ---- types and limits ----------------------------------------------------------------------------

NOUNS: dict[object, str] = {str: "text", int: "integer", float: "number", bool: "true or false",
                            Path: "path", SecretStr: "text (secret)", type(None): "unset"}


def constraints(meta: Iterable[object]) -> list[object]:
    found: list[object] = []
    for item in meta:
        found += constraints(item.metadata) if isinstance(item, FieldInfo) else [item]
    return found


def limits(meta: Iterable[object], noun: str) -> str:
    """The Field constraints as words: `1 to 512`, `> 0, ≤ 120`, `at most 4000 characters`, …"""
    bounds: dict[str, object] = {}
    parts = []
    for item in constraints(meta):
        for attr in ("ge", "gt", "le", "lt", "min_length", "max_length", "multiple_of", "pattern"):
            value = getattr(item, attr, None)
            if value is not None:
                bounds[attr] = value
    low = ("ge", bounds["ge"]) if "ge" in bounds else ("gt", bounds["gt"]) if "gt" in bounds else None
    high = ("le", bounds["le"]) if "le" in bounds else ("lt", bounds["lt"]) if "lt" in bounds else None
    if low and high and low[0] == "ge" and high[0] == "le":
        parts.append(f"{number(low[1])} {DASH} {number(high[1])}")
    else:
        signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
        parts += [f"{signs[bound[0]]} {number(bound[1])}" for bound in (low, high) if bound]
    if "multiple_of" in bounds:
        parts.append(f"a multiple of {number(bounds['multiple_of'])}")
    unit = "characters" if noun == "text" else "items"
    least, most = bounds.get("min_length"), bounds.get("max_length")
    if least is not None and most is not None:
        parts.append(f"{least} {DASH} {most} {unit}")
    elif most is not None:
        parts.append(f"at most {most} {unit}")
    elif least is not None:
        parts.append(f"at least {least} {unit}")
    if "pattern" in bounds:
        parts.append(f"matching {code(bounds['pattern'])}")
    for item in constraints(meta):  # AfterValidator(check_color) and the like: their docstring says it
        doc = first_paragraph(getattr(getattr(item, "func", None), "__doc__", None))
        if doc:
            parts.append(prose(doc))
    return ", ".join(parts)


def describe_type(annotation: Any, meta: Iterable[object] = ()) -> str:
    """A type (with the constraints pydantic checks) in words: `integer, 1 to 512`, `list of text`, …"""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return describe_type(args[0], [*meta, *args[1:]])
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in args if arg is not type(None)]
        choices = [value for arg in members if typing.get_origin(arg) is typing.Literal
                   for value in typing.get_args(arg)]
        if choices and all(typing.get_origin(arg) is typing.Literal for arg in members):
            return "one of " + ", ".join(code(value) for value in choices)
        return " or ".join(describe_type(arg, meta) for arg in members)
    if origin is typing.Literal:
        return "one of " + ", ".join(code(arg) for arg in args)
    if origin in (list, tuple):
        inner = describe_type(args[0]) if args else "values"
        bound = limits(meta, "list")
        return f"list of {inner}" + (f" ({bound})" if bound else "")
    if origin is dict:
        return "table" if not args or args[1] is Any else f"table of {describe_type(args[1])}"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return "table"
    noun = NOUNS.get(annotation, getattr(annotation, "__name__", str(annotation)))
    bound = limits(meta, noun)
    return f"{noun}, {bound}" if bound else noun


def field_type(info: FieldInfo) -> str:
    return describe_type(info.annotation, info.metadata)


def default_of(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return None if info.default is PydanticUndefined else info.default


# ---- settings ------------------------------------------------------------------------------------

SEPARATOR = re.compile(r"^# ?-{10,}\s*$")
SETTING_LINE = re.compile(r"^#? ?([A-Za-z_][A-Za-z0-9_-]*) = ")
TABLE_LINE = re.compile(r"^#? ?\[([A-Za-z0-9_.-]+)\]\s*$")
# Defaults that the code computes on the machine it runs on: never the build machine's value.
COMPUTED_DEFAULTS = {"worker_id": "computed on each host at start-up (see below)"}


class ExampleConfig:
    """config/i2v-watcher.toml read as documentation: each setting's comment block, and its groups."""

    def __init__(self, path: Path) -> None:
        self.lines = path.read_text(encoding="utf-8").splitlines()
        self.comments: dict[tuple[str, str], list[str]] = {}
        self.groups: list[tuple[str, list[str]]] = []
        table = ""
        for index, line in enumerate(self.lines):
            if self._is_title(index):
                self.groups.append((line.lstrip("# ").strip(), []))
                continue
            header = TABLE_LINE.match(line)
            if header and not line.startswith("#"):
                table = header.group(1)
                top = table.split(".")[0]
                self._note("", top, index)
                if self.groups and top not in self.groups[-1][1]:
                    self.groups[-1][1].append(top)
                continue
            setting = SETTING_LINE.match(line)
            if setting and not (table and line.startswith("#") and "." in table):
                self._note(table, setting.group(1), index)
                if not table and self.groups and setting.group(1) not in self.groups[-1][1]:
                    self.groups[-1][1].append(setting.group(1))

    def _is_title(self, index: int) -> bool:
        lines = self.lines
        return (0 < index < len(lines) - 1 and bool(SEPARATOR.match(lines[index - 1]))
                and bool(SEPARATOR.match(lines[index + 1])) and not SEPARATOR.match(lines[index]))

    def _note(self, table: str, key: str, index: int) -> None:
        if (table, key) in self.comments:
            return
        above = index - 1
        # Settings written one after the other share the comment above the first of them.
        while above >= 0 and SETTING_LINE.match(self.lines[above]) and not SEPARATOR.match(self.lines[above]):
            above -= 1
        block: list[str] = []
        while above >= 0:
            line = self.lines[above]
            if not line.startswith("#") or SEPARATOR.match(line) or SETTING_LINE.match(line) \
                    or TABLE_LINE.match(line):
                break
            block.insert(0, line[2:] if line.startswith("# ") else line[1:])
            above -= 1
        self.comments[(table, key)] = block

    def describe(self, table: str, key: str) -> str:
        return comment_markdown(self.comments.get((table, key), []))


def comment_markdown(block: list[str]) -> str:
    """A comment block as Markdown: running text as a paragraph, indented lines (aligned lists in the
    comment) as a preformatted block, so their columns survive."""
    out: list[str] = []
    text: list[str] = []
    pre: list[str] = []

    def flush() -> None:
        if text:
            out.append(prose(" ".join(text)))
            text.clear()
        if pre:
            out.append("```text\n" + textwrap.dedent("\n".join(pre)) + "\n```")
            pre.clear()

    for line in block:
        if line.startswith("  "):
            if text:
                flush()
            pre.append(line)
        elif not line.strip():
            flush()
        else:
            if pre:
                flush()
            text.append(line.strip())
    flush()
    return "\n\n".join(out)


def env_name(*parts: str) -> str:
    return "I2V_" + "__".join(part.upper() for part in parts)


def setting_entry(name: str, info: FieldInfo, table: str, doc: ExampleConfig, level: int) -> list[str]:
    path = [*table.split(".")] if table else []
    anchor = ".".join([*path, name])
    default = COMPUTED_DEFAULTS.get(anchor)
    if default is None:
        value = default_of(info)
        shown = toml(value)
        default = "unset" if value is None else code(shown) if len(shown) <= 70 else None
        long_default = None if default is not None else shown
    else:
        long_default = None
    kind = field_type(info)
    if info.is_required():
        default = "none: required"
    lines = [f"{'#' * level} `{name}` {{#{anchor}}}", ""]
    lines.append(f"- **Type:** {kind}")
    if default is not None:
        lines.append(f"- **Default:** {default}")
    else:
        lines.append("- **Default:** see below")
    json_note = " (as JSON)" if re.match(r"(list|table)", kind) else ""
    lines.append(f"- **Environment:** {code(env_name(*path, name))}{json_note}")
    lines.append("")
    description = doc.describe(table, name)
    if not description:
        log.warning("setting %s has no comment in %s", anchor, EXAMPLE_CONFIG.relative_to(REPO))
    lines += [description, ""]
    if long_default is not None:
        lines += ["Default:", "", "```toml", f"{name} = {long_default}", "```", ""]
    return lines


TABLES = frozenset({"defaults", "diffusion", "caption", "models", "presets"})


def settings_reference() -> str:
    from i2v_watcher.config.models import DEFAULT_MODELS
    from i2v_watcher.config.settings import Settings
    from i2v_watcher.steps.presets import SHIPPED_PRESETS

    doc = ExampleConfig(EXAMPLE_CONFIG)
    fields = Settings.model_fields
    placed = {key for _, keys in doc.groups for key in keys}
    groups = [*doc.groups, ("Not in the example config", [n for n in fields if n not in placed])]
    out: list[str] = []
    for title, keys in groups:
        keys = [key for key in keys if key in fields]
        if not keys:
            continue
        alone = len(keys) == 1 and keys[0] in TABLES  # a group that is one table: the table's heading
        if not alone:
            out += [f"## {prose(title)}", ""]
        level = "##" if alone else "###"
        for key in keys:
            info = fields[key]
            nested = typing.get_args(info.annotation)
            if key == "models":
                out += [f"{level} `[models.<backend>]` {{#models}}", "",
                        f"- **Environment:** {code('I2V_MODELS__<BACKEND>__MODEL')}, or the whole table "
                        f"as JSON in {code('I2V_MODELS')}", "", doc.describe("", key), ""]
                model_cls = nested[1]
                out += ["| key | type | description |", "|---|---|---|"]
                for sub, sub_info in model_cls.model_fields.items():
                    out.append(f"| `{sub}` | {field_type(sub_info)} | "
                               f"{prose(inline_comment(model_cls, sub))} |")
                out += ["", "The shipped tables:", "", "| backend | `model` | `variant` |", "|---|---|---|"]
                for backend, source in DEFAULT_MODELS.items():
                    out.append(f"| `{backend}` | {code(source.model)} | "
                               f"{code(source.variant) if source.variant else 'unset'} |")
                out.append("")
            elif key == "presets":
                out += [f"{level} `[presets.<name>]` {{#presets}}", "",
                        "- **Type:** table of presets, each `steps = [...]`",
                        f"- **Default:** the shipped presets: "
                        f"{', '.join(code(p) for p in SHIPPED_PRESETS)} (see [Presets](presets.md)); the "
                        "file adds presets or redefines one by name, and the shipped ones stay available",
                        f"- **Environment:** {code('I2V_PRESETS')} (the table as JSON)", "",
                        doc.describe("", key), ""]
            elif inspect.isclass(info.annotation) and issubclass(info.annotation, BaseModel):
                out += [f"{level} `[{key}]` {{#{key}}}", "",
                        f"- **Environment:** {code(env_name(key, '<KEY>'))} for one key, or the whole "
                        f"table as JSON in {code(env_name(key))}", "", doc.describe("", key), ""]
                for sub, sub_info in info.annotation.model_fields.items():
                    out += setting_entry(sub, sub_info, key, doc, len(level) + 1)
            else:
                out += setting_entry(key, info, "", doc, 3)
    return "\n".join(out)


def inline_comment(cls: type, field: str) -> str:
    """The `# comment` at the end of a field's line in its class's source, if any."""
    if field in getattr(cls, "model_fields", {}) and cls.model_fields[field].description:  # type: ignore[attr-defined]
        return str(cls.model_fields[field].description)  # type: ignore[attr-defined]
    for klass in cls.__mro__:
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        match = re.search(rf"^\s+{re.escape(field)}:[^#\n]*#\s*(.+)$", source, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return ""


# ---- the sidecar and the backends ----------------------------------------------------------------

# What a sidecar field falls back to when the config's [defaults] has no such key (spec.resolve).
SIDECAR_FALLBACKS = {
    "seed": "random in [0, 2³²), recorded in the metadata",
    "backend": "the config's `backend` (after `auto` is resolved)",
    "output_name": "from `output_template`",
    "priority": "`0` (normal)",
}


def sidecar_reference() -> str:
    from i2v_watcher.job.spec import JobDefaults, JobSpec

    defaults = JobDefaults()
    out = ["| key | type and limits | default | description |", "|---|---|---|---|"]
    for name, info in JobSpec.model_fields.items():
        if name in JobDefaults.model_fields:
            value = getattr(defaults, name)
            default = f"`[defaults].{name}` ({code(toml(value)) if value is not None else 'unset'})"
        elif name in SIDECAR_FALLBACKS:
            default = SIDECAR_FALLBACKS[name]
        else:
            default = code(toml(default_of(info)))
        if not info.description:
            log.warning("sidecar field %s has no description (Field(description=...) in spec.py)", name)
        out.append(f"| `{name}` {{#{name}}} | {field_type(info)} | {default} | "
                   f"{prose(info.description or '')} |")
    return "\n".join(out)


def _backends() -> dict[str, Any]:
    from i2v_watcher import backends

    backends.discover()
    return {name: backends.get(name) for name in backends.available()}


def backends_reference() -> str:
    from i2v_watcher.run.generate import GENERIC_FIELDS

    out = ["| backend | pipeline | honours | ignores | frames | widest aspect ratio |",
           "|---|---|---|---|---|---|"]
    for name, cls in _backends().items():
        pipeline = code(getattr(cls, "pipeline_class", "")) if cls.uses_model else "none (no model)"
        a, b = getattr(cls, "frames_step", (1, 0))
        frames = "any count" if (a, b) == (1, 0) else f"of the form {a}k+{b}"
        out.append(f"| `{name}` | {pipeline} | {', '.join(code(f) for f in sorted(cls.honours)) or '—'} | "
                   f"{', '.join(code(f) for f in sorted(cls.ignores)) or '—'} | {frames} | "
                   f"{number(cls.max_aspect)}:1 |")
    out += ["", "Every backend accepts " + ", ".join(code(f) for f in sorted(GENERIC_FIELDS)) + "."]
    return "\n".join(out)


def model_cards_reference() -> str:
    out = ["| backend | model | native size | frames | fps | steps | guidance | resolution | `auto` sizes |"
           " weights (bf16) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, cls in _backends().items():
        for card in cls.known_cards():
            sizes = ", ".join(f"{side}p" + (f" above {needs:g} GiB" if needs else "") for side, needs in
                              card.sizes) or f"{card.short_side}p"
            weights = card.weights_gb("bfloat16")
            out.append(f"| `{name}` | {card.label} (`{card.hub_id}`) | {card.width}x{card.height} | "
                       f"{card.num_frames} | {number(card.fps)} | {card.steps} | "
                       f"{number(card.guidance_scale)} | `{card.resolution}` | {sizes} | "
                       f"{f'{weights:g} GB' if weights else '—'} |")
    return "\n".join(out)


def quality_levels_reference() -> str:
    from i2v_watcher.backends.levels import level_params, planned_work
    from i2v_watcher.config.quality import shipped_levels
    from i2v_watcher.config.settings import Settings
    from i2v_watcher.job.spec import QUALITY_LEVELS

    settings = Settings(**{folder: f"/srv/i2v/{folder}" for folder in ("inbox", "outbox", "failed", "done",
                                                                         "work")})
    out = ["| backend | level | steps | guidance | frames | resolution | denoiser passes | work / final |",
           "|---|---|---|---|---|---|---|---|"]
    for name, cls in _backends().items():
        if not cls.uses_model:
            continue
        backend = cls(settings)
        params = {level: level_params(backend, level, shipped_levels()) for level in QUALITY_LEVELS}
        work = {level: planned_work(backend, job) for level, job in params.items()}
        for level, job in params.items():
            share = work[level]["work"] / work["final"]["work"]
            out.append(f"| `{name}` | {level} | {job.steps} | {number(job.guidance_scale)} | "
                       f"{work[level]['frames']} | `{job.resolution}` ({work[level]['size']}) | "
                       f"{work[level]['passes']} | {share:.2f} |")
    return "\n".join(out)


def backend_options_reference() -> str:
    out: list[str] = []
    without = []
    for name, cls in _backends().items():
        model = cls.options_model
        if model is None:
            without.append(code(name))
            continue
        out += [f"### `{name}` {{#options-{name}}}", "", prose(first_paragraph(model.__doc__)), "",
                "| key | type and limits | default | description |", "|---|---|---|---|"]
        for key, info in model.model_fields.items():
            value = default_of(info)
            default = "unset" if value is None else code(toml(value))
            out.append(f"| `{key}` | {field_type(info)} | {default} | {prose(inline_comment(model, key))} |")
        out.append("")
    if without:
        listed = ", ".join(without[:-1]) + " and " + without[-1] if len(without) > 1 else without[0]
        out.append(f"{listed} take no `backend_options`: a sidecar that sets any fails.")
    return "\n".join(out)


def first_paragraph(text: str | None) -> str:
    return " ".join((text or "").strip().split("\n\n")[0].split())


# ---- the command line ----------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from i2v_watcher.cli import _parser as build

    return build()


Commands = dict[str, argparse.ArgumentParser]


def _subcommands(parser: argparse.ArgumentParser) -> tuple[Commands, dict[str, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return dict(action.choices), helps
    return {}, {}


def usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=10_000)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    return formatter.format_help().strip()


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    text = action.help or ""
    if "%" in text:
        text = argparse.HelpFormatter(parser.prog)._expand_help(action)
    return text


def metavar_of(action: argparse.Action, default: str) -> str:
    metavar = action.metavar or default
    return metavar if isinstance(metavar, str) else " ".join(metavar)


def options_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | what it is |", "|---|---|"]
    groups = {id(action): group for group in parser._mutually_exclusive_groups
              for action in group._group_actions}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.option_strings:
            metavar = "" if action.nargs == 0 else " " + metavar_of(action, action.dest.upper())
            names = ", ".join(code(f"{option}{metavar}") for option in action.option_strings)
        else:
            names = code(metavar_of(action, action.dest))
        notes = []
        if action.option_strings and action.required:
            notes.append("required")
        if isinstance(action, argparse._AppendAction) and "repeatable" not in (action.help or ""):
            notes.append("repeatable")
        if not action.option_strings and action.nargs == "?":
            notes.append("optional")
        if action.default not in (None, False, [], argparse.SUPPRESS) and not isinstance(
                action, argparse._VersionAction):
            notes.append(f"default {code(action.default)}")
        group = groups.get(id(action))
        if group is not None:
            others = [a.option_strings[0] if a.option_strings else metavar_of(a, a.dest)
                      for a in group._group_actions if a is not action]
            notes.append(f"not together with {', '.join(code(o) for o in others)}"
                         + ("; one of them is required" if group.required else ""))
        text = prose(_help(parser, action)) or "—"
        rows.append(f"| {names} | {text}{' (' + '; '.join(notes) + ')' if notes else ''} |")
    return rows


def cli_overview() -> str:
    parser = _parser()
    commands, helps = _subcommands(parser)
    out = ["```text", usage(parser), "```", "", *options_table(parser), "",
           "| command | what it does |", "|---|---|"]
    out += [f"| [`{name}`](#{name}) | {prose(helps.get(name, ''))} |" for name in commands]
    return "\n".join(out)


def cli_command(name: str) -> str:
    parser = _parser()
    commands, helps = _subcommands(parser)
    if name not in commands:
        log.warning("reference:cli:%s names no command of i2v-watcher", name)
        return ""
    sub = commands[name]
    out = ["```text", usage(sub), "```", ""]
    summary = sub.description or helps.get(name, "")
    if summary:
        out += [prose(summary), ""]
    out += options_table(sub)
    return "\n".join(out)


def cli_others(named: set[str]) -> str:
    commands, _ = _subcommands(_parser())
    out: list[str] = []
    for name in commands:
        if name not in named:
            out += [f"### `{name}` {{#{name}}}", "", cli_command(name), ""]
    return "\n".join(out)


# ---- post-processing -----------------------------------------------------------------------------

def steps_reference() -> str:
    from i2v_watcher.steps import OutputStep, available, step_class
    from i2v_watcher.steps.presets import DEFAULT_OVERRIDABLE

    out: list[str] = []
    for name in available():
        cls = step_class(name)
        about = first_paragraph(sys.modules[cls.__module__].__doc__)
        about = re.sub(rf"^`{re.escape(name)}`:\s*", "", about)
        about = about[:1].upper() + about[1:]
        kind = "an output step: it ends a preset and writes one file" if issubclass(cls, OutputStep) \
            else "a filter step"
        out += [f"## `{name}` {{#{name}}}", "", prose(about), "",
                f"It is {kind}. ffmpeg filters it uses: "
                f"{', '.join(code(f) for f in cls.filters) or 'none'}"
                + (f"; on a soundtrack: {', '.join(code(f) for f in cls.audio_filters)}."
                   if cls.audio_filters else "."), ""]
        overridable = DEFAULT_OVERRIDABLE.get(name, [])
        out += ["| field | type and limits | default | notes |", "|---|---|---|---|"]
        for field, info in cls.model_fields.items():
            default = "required" if info.is_required() else (
                "unset" if default_of(info) is None else code(toml(default_of(info))))
            notes = prose(inline_comment(cls, field))
            if field in overridable:
                notes = (notes + "; " if notes else "") + "a sidecar may override it (by default)"
            out.append(f"| `{field}` | {field_type(info)} | {default} | {notes} |")
        out.append("")
    return "\n".join(out)


def presets_reference() -> str:
    from i2v_watcher.job.spec import JobDefaults
    from i2v_watcher.steps import dump_step
    from i2v_watcher.steps.presets import SHIPPED_PRESETS

    default = JobDefaults().presets
    out = ["| preset | steps | output |", "|---|---|---|"]
    for name, preset in SHIPPED_PRESETS.items():
        chain = preset.chain()
        steps = " → ".join(
            code(f"{step.name}(" + ", ".join(f"{k}={number(v)}" for k, v in dump_step(step).items()
                                             if k in preset_keys(preset, step)) + ")")
            for step in chain)
        output = chain[-1]
        ext = output.extension() if hasattr(output, "extension") else ""
        mark = " (the default)" if name in default else ""
        out.append(f"| `{name}`{mark} {{#{name}}} | {steps} | {code(ext)} |")
    out += ["", "Their definitions, as you would write them in the config file:", "", "```toml"]
    for name, preset in SHIPPED_PRESETS.items():
        out += [f"[presets.{name}]", "steps = ["]
        out += [f"    {toml(step)}," for step in preset.steps]
        out += ["]", ""]
    out[-1] = "```"
    return "\n".join(out)


def preset_keys(preset: Any, step: Any) -> set[str]:
    """The fields a preset sets itself for this step (the rest are the step's defaults)."""
    for raw in preset.steps:
        if raw.get("step") == step.name:
            return set(raw) - {"step"}
    return set()


# ---- pages from files outside docs/ --------------------------------------------------------------

def example_config() -> str:
    return "```toml\n" + EXAMPLE_CONFIG.read_text(encoding="utf-8").rstrip() + "\n```"


def to_deploy_page(markdown: str, page_uri: str) -> str:
    """A page's links to deploy/README.md, the repository's file, made links to its page in the site."""
    depth = page_uri.count("/")
    return markdown.replace(f"]({'../' * (depth + 1)}deploy/README.md", f"]({'../' * depth}{DEPLOY_PAGE}")


def deploy_page() -> str:
    """deploy/README.md as a page of the site: links into docs/ made relative to the page, links to
    other files of the repository shown as paths."""
    text = DEPLOY_README.read_text(encoding="utf-8")
    text = re.sub(r"\]\(\.\./docs/([^)]+)\)", r"](../\1)", text)

    def other(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        if target.startswith(("#", "http://", "https://", "../")):
            return match.group(0)
        return f"{label} (`deploy/{target}`)"

    text = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", other, text)
    note = ("!!! note\n    This page is `deploy/README.md` from the repository, the install procedure kept "
            "beside the unit files in `deploy/systemd/`; the site includes it when it is built.\n")
    title, _, rest = text.partition("\n")
    return f"{title}\n\n{note}{nest_lists(rest)}"


def nest_lists(text: str) -> str:
    """GitHub nests a list indented by two spaces; Python-Markdown needs four."""
    out: list[str] = []
    fence = nested = False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fence = not fence
        if not fence and line.startswith("  - "):
            nested = True
            line = "  " + line
        elif not fence and nested and line.startswith("    "):
            line = "  " + line
        else:
            nested = False
        out.append(line)
    return "\n".join(out)


RENDERERS: dict[str, Callable[[], str]] = {
    "model-cards": model_cards_reference,
    "quality-levels": quality_levels_reference,
    "settings": settings_reference,
    "sidecar": sidecar_reference,
    "backends": backends_reference,
    "backend-options": backend_options_reference,
    "cli": cli_overview,
    "steps": steps_reference,
    "presets": presets_reference,
    "example-config": example_config,
}
