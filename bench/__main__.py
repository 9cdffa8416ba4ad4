"""Run the benchmark suite and write docs/benchmarks.md: the machine, the date, the versions, and each
benchmark's table with its target and whether this run met it.

    python -m bench [--quick] [--only NAME ...] [--out PATH] [--list]

A benchmark is a module of this package with `run(quick: bool = False) -> tuple[str, list[dict]]` (a
title and the rows of its table, measured side by side in one run) and a `main()` to run it alone. It
may also have `TARGET` (a sentence), `meets_target(rows) -> bool` (or a "target met" column of
booleans), and `unavailable() -> str | None` (why it cannot run on this machine, e.g. no GPU). A
module not there yet, or without `run`, is skipped with a note. `--only` runs some and keeps the other
sections of an existing output file as they were (each section says when and how it was measured).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import re
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.report import machine, table  # noqa: E402

# In the order they run (and appear): cheap and CPU-only first, the GPU one last.
BENCHMARKS = ("postprocess", "judge", "verify", "overhead", "latency", "web", "pipeline", "workers", "levels",
              "speedups", "gpu_i2vgen_xl", "gpu_models")
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
SECTION = re.compile(r"<!-- bench:(?P<name>[\w-]+) -->\n.*?<!-- /bench:(?P=name) -->\n", re.S)


def load(name: str) -> tuple[ModuleType | None, str | None]:
    """The benchmark module, or None and why not."""
    try:
        module = importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"bench.{name}":
            return None, f"bench/{name}.py is not there yet: skipped"
        return None, f"cannot import bench/{name}.py: {exc}"
    if not callable(getattr(module, "run", None)):
        return None, f"bench/{name}.py has no run(quick) yet: skipped (run it alone: python bench/{name}.py)"
    return module, None


def describe(module: ModuleType) -> str:
    """The first paragraph of the module's docstring."""
    doc = (module.__doc__ or "").strip()
    return " ".join(doc.split("\n\n", 1)[0].split())


def section(name: str, quick: bool, body: str, ran: bool = True) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!-- bench:{name} -->\n## {name}\n\n_{'Measured' if ran else 'Checked'} {when}, "
            f"`python -m bench{' --quick' if quick else ''}`._\n\n{body.rstrip()}\n<!-- /bench:{name} -->\n")


def run_one(name: str, quick: bool, say: Callable[[str], None]) -> tuple[str, bool]:
    """The Markdown section of one benchmark, and whether it ran (a skip is not a failure)."""
    module, why = load(name)
    if module is None:
        assert why is not None
        say(f"{name}: {why}")
        return section(name, quick, f"{why}.\n", ran=False), True
    unavailable: Callable[[], str | None] | None = getattr(module, "unavailable", None)
    reason = unavailable() if unavailable else None
    if reason:
        say(f"{name}: not run: {reason}")
        return section(name, quick, f"{describe(module)}\n\nNot run on this machine: {reason}.\n",
                       ran=False), True
    say(f"{name}: running{' (quick)' if quick else ''} ...")
    started = time.monotonic()
    try:
        title, rows = module.run(quick=quick)
    except Exception:
        error = traceback.format_exc()
        say(f"{name}: FAILED\n{error}")
        return section(name, quick, f"{describe(module)}\n\n**Failed**:\n\n```\n{error}```\n"), False
    seconds = time.monotonic() - started
    target: str | None = getattr(module, "TARGET", None)
    meets: Callable[[list[dict[str, Any]]], bool] | None = getattr(module, "meets_target", None)
    if meets is None and rows and all("target met" in row for row in rows):
        meets = lambda rows: all(row["target met"] is True for row in rows)  # noqa: E731
    if target and meets:
        verdict = f"Target: {target}: **{'met' if meets(rows) else 'not met'}**."
    elif target:
        verdict = f"Target: {target}."
    else:
        verdict = "No target: for information."
    say(f"{name}: {verdict} ({seconds:.0f} s)\n{table(rows)}")
    body = (f"{describe(module)}\n\n{title}\n\n{table(rows)}\n\n{verdict} "
            f"(The benchmark took {seconds:.0f} s.)\n")
    return section(name, quick, body), True


def document(sections: dict[str, str], previous: str) -> str:
    kept = {m["name"]: m.group(0) for m in SECTION.finditer(previous)}
    kept.update(sections)
    ordered = [kept[name] for name in BENCHMARKS if name in kept]
    ordered += [text for name, text in kept.items() if name not in BENCHMARKS]
    header = ("# Benchmarks\n\nWritten by `python -m bench` (`--quick` for a run of a few minutes, "
              "`--only NAME` for one benchmark, `--out PATH`); do not edit by hand. Every table compares "
              "contenders measured side by side in the same run, so the ratios hold where the absolute "
              "times do not: re-run it on the machine you care about. Sections run with `--only` keep "
              "their own date.\n\n## Machine\n\n" + table(machine()) + "\n\n")
    return header + "\n".join(ordered)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs and jobs: a few minutes in all")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="the Markdown file (docs/benchmarks.md)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and whether each can run")
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(text, flush=True)

    if args.list:
        for name in BENCHMARKS:
            module, why = load(name)
            if module is not None:
                reason = getattr(module, "unavailable", lambda: None)()
                why = f"cannot run here: {reason}" if reason else describe(module)
            print(f"{name:15} {why}")
        return 0
    names = args.only or list(BENCHMARKS)
    sections: dict[str, str] = {}
    ok = True
    started = time.monotonic()
    for name in names:
        sections[name], ran = run_one(name, args.quick, say)
        ok = ok and ran
    previous = ""
    with contextlib.suppress(OSError):
        previous = args.out.read_text() if args.only else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(document(sections, previous))
    say(f"wrote {args.out} ({time.monotonic() - started:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
