"""What the benchmark suite writes: Markdown tables, and the machine and versions a run was measured on."""

from __future__ import annotations

import contextlib
import os
import platform
from importlib import metadata
from pathlib import Path


def table(rows: list[dict[str, object]]) -> str:
    """A Markdown table: the columns are the keys of the rows, in order of first appearance."""
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(column, "")) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def gpus() -> str:
    try:
        import torch
    except ImportError:
        return "unknown (torch is not installed)"
    if not torch.cuda.is_available():
        return "none (torch sees no CUDA device)"
    found = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        found.append(f"{props.name} ({props.total_memory / 2**30:.0f} GiB)")
    return ", ".join(found) + f"; CUDA {torch.version.cuda}"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("i2v-watcher", "torch", "diffusers", "transformers", "numpy", "imageio-ffmpeg"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    try:
        from i2v_watcher.media.ffmpeg import find_ffmpeg

        binary, origin = find_ffmpeg(None)
        version = binary.version.removeprefix("ffmpeg version ").split(" Copyright")[0]
        found["ffmpeg"] = f"{version} ({origin})"
    except Exception as exc:  # the header is still written; the benchmarks that need ffmpeg say why
        found["ffmpeg"] = f"not found: {exc}"
    return found


def machine() -> list[dict[str, object]]:
    memory = memory_gib()
    rows: list[dict[str, object]] = [
        {"what": "CPU", "value": f"{cpu_model()}, {os.cpu_count()} logical cores"
                                 + (f" ({len(os.sched_getaffinity(0))} usable)"
                                    if len(os.sched_getaffinity(0)) != os.cpu_count() else "")},
        {"what": "memory", "value": f"{memory} GiB" if memory else "unknown"},
        {"what": "GPU", "value": gpus()},
        {"what": "OS", "value": f"{platform.system()} {platform.release()}"},
    ]
    rows += [{"what": name, "value": version} for name, version in versions().items()]
    return rows
