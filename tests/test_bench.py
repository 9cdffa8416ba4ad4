"""The benchmark suite's entry point (`python -m bench`): it lists what it can run, runs a benchmark in
quick mode (here the post-processing one, on a few small frames) and writes the Markdown report with
the machine, the table and the verdict. Structure only: timings are never asserted."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import REPO

SUITE = ("postprocess", "verify", "overhead", "latency", "pipeline", "workers", "gpu_i2vgen_xl")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    sys.path.insert(0, str(REPO))
    return importlib.import_module("bench.__main__")


def test_the_suite_lists_every_benchmark_and_says_what_cannot_run(bench: ModuleType) -> None:
    result = subprocess.run([sys.executable, "-m", "bench", "--list"], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines()]
    assert listed == list(bench.BENCHMARKS) and set(listed) >= set(SUITE)


def test_quick_postprocess_writes_the_report(bench: ModuleType, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    postprocess = importlib.import_module("bench.postprocess")
    monkeypatch.setattr(postprocess, "W", 64)  # a few small frames: the structure, not the figures
    monkeypatch.setattr(postprocess, "H", 64)
    monkeypatch.setattr(postprocess, "FRAMES", 4)
    monkeypatch.setattr(postprocess, "QUICK_RUNS", 1)
    out = tmp_path / "docs" / "benchmarks.md"
    out.parent.mkdir()
    # A section from an earlier run of another benchmark is kept as it was.
    out.write_text("# Benchmarks\n\n<!-- bench:overhead -->\n## overhead\n\nold table\n"
                   "<!-- /bench:overhead -->\n")
    assert bench.main(["--only", "postprocess", "--quick", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Benchmarks\n") and "## Machine" in text
    for what in ("| CPU |", "| memory |", "| GPU |", "| python |", "| ffmpeg |"):
        assert what in text, what
    section = text.split("<!-- bench:postprocess -->", 1)[1].split("<!-- /bench:postprocess -->", 1)[0]
    assert "--quick" in section and "| flow | encodes | median s |" in section
    for flow in ("ours (1 encode)", "webui-pipeline (3 encodes)", "webui-batch (2 encodes)"):
        assert f"| {flow} |" in section, flow
    assert "Target: ours ≥ 1.15x faster than webui-batch" in section
    assert "**met**" in section or "**not met**" in section
    assert "<!-- bench:overhead -->\n## overhead\n\nold table\n" in text
    assert text.index("bench:postprocess") < text.index("bench:overhead")  # the suite's order


def test_a_benchmark_that_is_not_there_or_cannot_run_is_a_note(bench: ModuleType) -> None:
    said: list[str] = []
    text, ran = bench.run_one("no_such_benchmark", True, said.append)
    assert ran and "bench/no_such_benchmark.py is not there yet" in text and said
    text, ran = bench.run_one("gpu_i2vgen_xl", True, said.append)
    assert ran and "## gpu_i2vgen_xl" in text
    gpu = importlib.import_module("bench.gpu_i2vgen_xl")
    if gpu.unavailable():
        assert "Not run on this machine: it needs an NVIDIA GPU" in text


def test_quick_pipeline_reports_run_and_celery_modes(bench: ModuleType,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline benchmark in both modes: `run --once`, and a real redis-server, `run` and one `worker`
    (a few small jobs: the structure, not the figures)."""
    pipeline = importlib.import_module("bench.pipeline")
    monkeypatch.setattr(pipeline, "QUICK", (2, 1, 4))
    title, rows = pipeline.run(quick=True)
    assert title == pipeline.TITLE and [row["mode"] for row in rows] == ["run", "celery worker"]
    for row in rows:
        assert row["jobs"] == 2 and isinstance(row["target met"], bool), row
        assert float(str(row["efficiency"])) > 0 and str(row["stages s / wall"]).endswith("x"), row
    assert "Celery mode" in pipeline.TARGET
