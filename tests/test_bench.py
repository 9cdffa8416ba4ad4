"""The benchmark suite's entry point (`python -m bench`): it lists what it can run, runs a benchmark in
quick mode (here the post-processing one, on a few small frames) and writes the Markdown report with
the machine, the table and the verdict. Structure only: timings are never asserted."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import REPO

SUITE = ("postprocess", "verify", "overhead", "latency", "pipeline", "workers", "gpu_i2vgen_xl", "gpu_models")


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


def test_gpu_models_tiny_runs_each_pipeline_through_the_real_path(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`--tiny`: the GPU benchmark's own path (meta build, random weights, prompt embeddings, the step
    clock, the decode) on the CPU with tiny configs, here Wan 2.2 A14B (two experts) and LTX-2 (its audio
    stepped by a copy of the scheduler, the clock's on the video's alone); a typo is reported, not run."""
    gpu_models = importlib.import_module("bench.gpu_models")
    out = tmp_path / "gpu_models.json"
    argv = ["--tiny", "--steps", "2", "--json", str(out)]
    for name in ("wan2.2-i2v-a14b", "ltx2", "no-such-model"):
        argv += ["--only", name]
    assert gpu_models.main(argv) == 0
    report = json.loads(out.read_text())
    assert [row["model"] for row in report["rows"]] == ["Wan 2.2 I2V-A14B", "LTX-2"]
    for row in report["rows"]:
        assert "note" not in row, row
        assert row["steps timed"] == 2 and row["s/step"] > 0 and row["VAE decode s"] > 0, row
        assert row["extrapolated s"] > row["first step s"] and row["params B"] > 0, row
    assert report["notes"] == ["no-such-model: no such backend or model (known: " + ", ".join(sorted(
        {case.backend for case in gpu_models.CASES} | {case.name for case in gpu_models.CASES})) + ")"]
    printed = capsys.readouterr().out
    assert "| backend | model | size | frames |" in printed and "| Wan 2.2 I2V-A14B |" in printed
    assert "| ltx2 | LTX-2 | 64x64 | 9 |" in printed


def test_gpu_models_says_why_it_does_not_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a GPU it exits 0 saying why; with the time spent, what is left is skipped with the reason."""
    gpu_models = importlib.import_module("bench.gpu_models")
    if gpu_models.unavailable() is None:
        pytest.skip("a CUDA GPU is present: the no-GPU path cannot be seen here")
    assert gpu_models.main(["--json", str(tmp_path / "none.json")]) == 0
    assert "gpu_models: not run: it needs an NVIDIA GPU" in capsys.readouterr().out
    assert not (tmp_path / "none.json").exists()
    out = tmp_path / "spent.json"
    assert gpu_models.main(["--tiny", "--only", "svd", "--max-seconds", "0", "--json", str(out)]) == 0
    [row] = json.loads(out.read_text())["rows"]
    assert row["note"].startswith("skipped: the benchmark's time was spent")


def test_gpu_models_real_configs_are_the_published_sizes() -> None:
    """Every real-size pipeline builds on the meta device (no weights: nothing is allocated) from
    bench/real_configs.py, and its denoisers are the size each model is published as."""
    gpu_models = importlib.import_module("bench.gpu_models")
    diffusers = importlib.import_module("diffusers")
    # Billions: the name-plate sizes (Wan 14B, TI2V 5B, LTX 2B, CogVideoX 5B, HunyuanVideo 13B, LTX-2 19B)
    # to the second digit; Wan 2.1 I2V's 16.4 is the 14B with its image cross-attention (40 layers of
    # 2 x 5120^2).
    published = {
        "i2vgen-xl": {"unet": 1.42}, "svd-xt": {"unet": 1.52}, "wan2.1-i2v-14b": {"transformer": 16.4},
        "wan2.2-i2v-a14b": {"transformer": 14.3, "transformer_2": 14.3},
        "wan2.2-ti2v-5b": {"transformer": 5.0}, "ltx-video-0.9": {"transformer": 1.9},
        "cogvideox1.5-5b-i2v": {"transformer": 5.6}, "hunyuanvideo-i2v": {"transformer": 12.8},
        "ltx-2": {"transformer": 19.0}}
    assert {case.name for case in gpu_models.CASES} == set(published)
    for case in gpu_models.CASES:
        spec = case.real()
        models = {name: gpu_models.skeleton(part) for name, part in spec.items()
                  if isinstance(part, gpu_models.Part)}
        assert all(p.is_meta for model in models.values() for p in model.parameters()), case.name
        pipe = getattr(diffusers, case.pipeline)(**{**spec, **models})
        for name, billions in published[case.name].items():
            counted = sum(p.numel() for p in getattr(pipe, name).parameters()) / 1e9
            assert abs(counted - billions) / billions < 0.02, (case.name, name, counted)


def test_levels_counts_each_level_of_one_backend_on_its_tiny_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """LTX-Video batches the prompt and the negative prompt into one call of 2: the hooks count 2 passes a
    step, as planned from the guidance; one frame a level keeps it quick."""
    levels = importlib.import_module("bench.levels")
    monkeypatch.setattr(levels, "FRAME_SCALE", 1000)
    title, rows = levels.run(quick=True, only=["ltx-video"])
    assert title == levels.TITLE and [row["level"] for row in rows] == ["draft", "standard", "final"]
    for row in rows:
        assert row["tiny passes counted"] == row["tiny passes planned"] == 2 * row["tiny steps"], row
        assert row["tiny wall s"] > 0 and row["target met"] is True, row
    draft, _, final = rows
    assert draft["passes"] == 20 and final["passes"] == 100 and draft["work / final"] <= 0.2
    assert final["tiny work / final"] == final["tiny wall / final"] == 1.0


@pytest.mark.slow  # real daemons and a real redis-server
def test_quick_workers_reports_jobs_per_minute_for_each_fleet(bench: ModuleType) -> None:
    """The fleet benchmark in both modes: 1 and 2 real `run` daemons on one inbox, then a real
    redis-server, a dispatching `run` and 1 and 2 `worker`s (a few short jobs: the structure, not the
    figures; the full run's 4 workers are the target's)."""
    workers = importlib.import_module("bench.workers")
    title, rows = workers.run(quick=True, counts=(1, 2))
    assert title == workers.TITLE
    assert [(row["mode"], row["workers"]) for row in rows] == [
        (mode, n) for mode in ("run (folders)", "celery workers") for n in (1, 2)]
    for row in rows:
        assert row["jobs"] == workers.QUICK[0] and row["wall s"] > workers.QUICK[2], row
        assert row["jobs per minute"] == pytest.approx(60 * row["jobs"] / row["wall s"], abs=0.5), row
        assert 0 < int(str(row["GPU busy"]).rstrip("%")) <= 100, row
        spread = [int(n) for n in str(row["jobs per worker"]).split("/")]
        assert sum(spread) == row["jobs"] and len(spread) <= row["workers"], row
        # Jobs this short are mostly start-up and hand-over, and the machine is shared: sane, not fast.
        assert 0.5 <= float(str(row["vs 1 worker"]).rstrip("x")) <= row["workers"] * 1.05, row
    assert rows[0]["vs 1 worker"] == rows[2]["vs 1 worker"] == "1.00x"
    assert not workers.meets_target(rows)  # no row of 4 workers: nothing to meet
    assert workers.meets_target([{"workers": 4, "vs 1 worker": "3.60x"}])
