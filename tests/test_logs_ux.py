"""Logs that say what is happening: why a job waits, how far an encode is, what a stop signal does (and
that a second one aborts even while the daemon is deep inside a C call), every line JSON in JSON mode,
hints that fit, and a console format for people."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from conftest import PLUGINS, REPO, Daemon, Folders, daemon_env, make_image

Start = Callable[..., Daemon]


def named(daemon: Daemon, start: str) -> list[dict[str, Any]]:
    return [e for e in daemon.events() if str(e["event"]).startswith(start)]


def moment(event: dict[str, Any]) -> float:
    """A line's timestamp, in seconds."""
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def test_a_waiting_job_says_why_once_and_when_the_wait_ends(folders: Folders, start: Start) -> None:
    # rescan_s is long: the lone sidecar is reported when its grace period ends, not at the next walk.
    folders.write_config(sidecar_grace_s=1.0, orphan_sidecar_s=1.0, rescan_s=30.0)
    make_image(folders.inbox / "a.png")
    (folders.inbox / "b.yaml").write_text("prompt: a lone sidecar\n")
    started = time.monotonic()
    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=30) == 3  # the lone sidecar failed
    assert time.monotonic() - started < 15
    sidecar = named(daemon, "waiting 1 s for a sidecar")
    assert [(e["job"], e["wait_s"], e["setting"]) for e in sidecar] == [("a", 1.0, "sidecar_grace_s")]
    orphan = named(daemon, "a sidecar without an image: waiting up to 1 s")
    assert [(e["job"], e["setting"]) for e in orphan] == [("b", "orphan_sidecar_s")]
    events = [e["event"] for e in daemon.events()]
    ended = events.index("no sidecar came: taking the image with the defaults")
    assert events.index(sidecar[0]["event"]) < ended < events.index("claimed")
    assert folders.report("b")["stage"] == "watch" and (folders.outbox / "a.mp4").exists()


def test_a_file_still_being_written_is_said_once(folders: Folders, start: Start) -> None:
    folders.write_config(settle_s=1.0)
    daemon = start(folders.config)
    daemon.read_until("watching")
    # The sidecar appears whole (a rename), so that only the image is seen being written, whenever the
    # daemon's first scan comes.
    (folders.root / "c.yaml").write_text("num_frames: 3\n")
    (folders.root / "c.yaml").rename(folders.inbox / "c.yaml")
    data = make_image(folders.root / "c.png").read_bytes()
    with open(folders.inbox / "c.png", "wb") as handle:  # written slowly, like a copy over a share
        for index in range(5):
            handle.write(data[index * len(data) // 5:(index + 1) * len(data) // 5])
            handle.flush()
            time.sleep(0.3)
    daemon.read_until("claimed")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    writing = named(daemon, "settling: a file is still being written")
    assert len(writing) == 1 and writing[0]["job"] == "c" and writing[0]["file"] == "c.png"
    # How long it had been changing when the change was seen depends on the scans' timing (0.0 when
    # two scans fall close together on a loaded machine); the writes took 1.5 s in all.
    assert 0 <= writing[0]["changing_for_s"] < 5 and writing[0]["settle_s"] == 1.0


def test_an_encode_logs_its_progress() -> None:
    """ffmpeg's -progress blocks become `encoding` lines: at most one per progress_log_s, and the last.
    `-re` reads the 12 source frames at their rate (10 fps): about 1.2 s of encoding, whatever the CPU."""
    from i2v_watcher.job.checkpoint import Checkpoint
    from i2v_watcher.media.ffmpeg import EncodeProgress, find_ffmpeg
    from i2v_watcher.media.process import run_ffmpeg

    binary, _ = find_ffmpeg(None)
    command = [binary.path, "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats", "-progress",
               "pipe:1", "-re", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-frames:v", "12",
               "-f", "null", "-"]
    runs = {}
    # An earlier test of the session may have configured structlog to drop info lines (doctor
    # configures "warning"): capture_logs replaces the processors, not that level filter.
    structlog.reset_defaults()
    for interval_s in (0.0, 60.0):
        with structlog.testing.capture_logs() as logged:
            run_ffmpeg(command, b"", Checkpoint(), stall_s=30, report=EncodeProgress(12, interval_s))
        runs[interval_s] = [e for e in logged if e["event"] == "encoding"]
    every = runs[0.0]
    assert len(every) >= 2 and every[-1]["done"] == every[-1]["total"] == 12
    assert every[-1]["percent"] == 100 and every[-1]["stage"] == "postprocess" and "speed" in every[-1]
    assert [e["done"] for e in every] == sorted(e["done"] for e in every) and every[0]["done"] > 0
    # The first, then only the last (where ffmpeg's first block falls varies with the load).
    throttled = [e["done"] for e in runs[60.0]]
    assert len(throttled) == 2 and 0 < throttled[0] < 12 and throttled[1] == 12, throttled


def test_the_daemon_logs_the_last_encoding_line(folders: Folders, start: Start) -> None:
    make_image(folders.inbox / "a.png")
    (folders.inbox / "a.yaml").write_text("num_frames: 7\n")
    daemon = start(folders.config, "--once")
    assert daemon.wait() == 0
    (line,) = named(daemon, "encoding")
    assert (line["job"], line["done"], line["total"], line["percent"]) == ("a", 7, 7, 100)


def test_two_sigints_a_second_apart_abort_a_job_stuck_in_a_c_call(folders: Folders, start: Start) -> None:
    """Python runs its signal handler only between bytecodes of the main thread: two SIGINTs that arrive
    while it waits in one C call (a GPU step) used to trip one flag, and the second was lost. Here the
    job generates in the main thread (pipeline_depth = 1), 2.5 s in C per frame."""
    folders.write_config(backend="blocking", plugins=["blocking_backend"], pipeline_depth=1,
                         stop_timeout_s=600)
    make_image(folders.inbox / "a.png")
    (folders.inbox / "a.yaml").write_text("num_frames: 4\nbackend_options: {block_s: 2.5}\n")
    daemon = start(folders.config)
    daemon.read_until("progress")  # the first frame: the second frame's C call has begun
    time.sleep(0.5)
    daemon.signal(signal.SIGINT)
    time.sleep(1.0)
    daemon.signal(signal.SIGINT)
    second = time.monotonic()
    assert daemon.wait(timeout=30) == 0
    # The C call ends (about 1 s left), and the job with it; finishing it would take two more frames
    # of 2.5 s and the encode (the job is published then, which the asserts below also catch).
    assert time.monotonic() - second < 5.5, daemon.log
    (first,) = named(daemon, "stopping: no new jobs; the running job may finish within 600 s")
    assert first["event"].endswith("press Ctrl-C again to abort it now") and first["jobs"] == ["a"]
    (again,) = named(daemon, "stop signal again: aborting the running job now")
    assert moment(again) - moment(first) > 0.7  # each said when it came, not when the C call returned
    assert named(daemon, "stopped: job put back into the inbox")
    assert folders.files("inbox") == ["a.png", "a.yaml"] and folders.files("outbox") == []


def test_a_stop_while_idle_says_so(folders: Folders, start: Start) -> None:
    daemon = start(folders.config)
    daemon.read_until("watching")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert [e["signal"] for e in named(daemon, "stopping: no job is running")] == ["SIGTERM"]


def test_the_console_format_is_for_people(folders: Folders, start: Start) -> None:
    folders.write_config(log_format="console")
    make_image(folders.inbox / "a.png")
    (folders.inbox / "a.yaml").write_text("num_frames: 3\n")
    daemon = start(folders.config, "--once")
    assert daemon.wait() == 0
    assert "\x1b[" not in daemon.log  # no colours: stderr is not a terminal
    with_worker = [line for line in daemon.lines if "worker_id=" in line]
    assert len(with_worker) == 1 and " watching " in with_worker[0]  # said once, at start-up
    assert all(line[:2].isdigit() and line[2] == ":" for line in daemon.lines)  # HH:MM:SS


def test_json_lines_say_the_ffmpeg_binary_once(folders: Folders, start: Start) -> None:
    make_image(folders.inbox / "a.png")
    (folders.inbox / "a.yaml").write_text("num_frames: 3\n")
    daemon = start(folders.config, "--once")
    assert daemon.wait() == 0
    (found,) = [e for e in daemon.events() if e["event"] == "ffmpeg found"]
    assert "Copyright" not in found["version"]
    assert sum(found["path"] in line for line in daemon.lines) == 1


@pytest.mark.timeout(300)
def test_with_a_diffusion_model_every_line_is_json(folders: Folders, start: Start, tmp_path: Path) -> None:
    """transformers' and diffusers' warnings, warnings.warn and their progress bars used to add plain
    lines at every start-up."""
    pytest.importorskip("diffusers")
    from tiny_models import build_i2vgen_xl

    model = build_i2vgen_xl(tmp_path / "i2vgen-xl")
    folders.write_config(backend="i2vgen-xl", diffusion={"device": "cpu"},
                         defaults={"num_frames": 4, "steps": 2, "resolution": "64p", "fps": 8.0},
                         models={"i2vgen-xl": {"model": str(model)}})
    make_image(folders.inbox / "a.png")
    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=240) == 0, daemon.log
    lines = [line for line in daemon.lines if line.strip()]
    for line in lines:
        assert isinstance(json.loads(line), dict), line
    assert any(e.get("logger", "").startswith(("transformers", "diffusers", "py.warnings"))
               for e in daemon.events())  # the libraries' warnings are there, as JSON
    assert named(daemon, "published")


@pytest.mark.parametrize(("dtype", "advice", "not_advised"), [
    (None, 'dtype = "bfloat16"', None),
    ("float16", 'dtype = "bfloat16"', None),
    ("bfloat16", 'dtype = "float32"', 'dtype = "bfloat16"'),
    ("float32", "already runs in float32", 'dtype = "'),
])
def test_the_nan_and_black_frame_hints_fit_the_dtype(dtype: str | None, advice: str,
                                                     not_advised: str | None) -> None:
    torch = pytest.importorskip("torch")
    from i2v_watcher.backends.attempt import to_uint8
    from i2v_watcher.errors import JobError

    for frames in (torch.full((2, 3, 4, 4), float("nan")), torch.zeros((2, 3, 4, 4))):
        with pytest.raises(JobError) as caught:
            to_uint8(frames, dtype=dtype)
        assert advice in caught.value.hint
        assert not_advised is None or not_advised not in caught.value.hint


def test_a_blocked_main_thread_still_counts_each_signal() -> None:
    """The reader counts signals while the main thread is inside one C call (no handler can run)."""
    script = """
import os, signal, sys, threading, time
sys.path.insert(0, sys.argv[1])
from blocking_backend import blocked_in_c
from i2v_watcher.service.signals import SignalReader
seen = []
signal.signal(signal.SIGINT, lambda *_: None)
reader = SignalReader([signal.SIGINT], seen.append)
assert reader.start()
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
threading.Timer(0.9, os.kill, (os.getpid(), signal.SIGINT)).start()
blocked_in_c(1.5)
time.sleep(0.2)
reader.stop()
print(len(seen))
"""
    result = subprocess.run([sys.executable, "-c", script, str(PLUGINS)], capture_output=True, text=True,
                            timeout=30, cwd=REPO, env=daemon_env())
    assert result.stdout.strip() == "2", result.stderr
