"""The promise under faults and hostile input, as real processes: no corrupt clip published, no
orphaned encoder, no poison job that stops the queue, no GPU time spent on a job that cannot be
published, and names that fit any filesystem."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from collections.abc import Callable
from pathlib import Path

import imageio_ffmpeg
import pytest

from conftest import Daemon, Folders, cli, daemon_env, decode, make_image, wait_for

Start = Callable[..., Daemon]
SLOW = {"backend": "slow", "plugins": ["slow_backend"]}


def ffmpeg_wrapper(folder: Path, body: str) -> Path:
    """An `ffmpeg_path` that runs `body` (sh) around the real ffmpeg for encodes fed on stdin only
    (the start-up probes and the decode checks run it plainly)."""
    script = folder / "ffmpeg-wrapper"
    real = imageio_ffmpeg.get_ffmpeg_exe()
    script.write_text(f'#!/bin/sh\ncase "$*" in *rawvideo*) {body} ;; esac\nexec "{real}" "$@"\n')
    script.chmod(0o755)
    return script


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_an_encoder_never_outlives_a_killed_daemon(folders: Folders, start: Start, tmp_path: Path) -> None:
    """kill -9 during an encode: ffmpeg runs in its own session (a Ctrl-C must not reach it), yet the
    kernel kills it with the daemon, and the restarted daemon encodes into a folder of its own."""
    wrapper = ffmpeg_wrapper(tmp_path, "sleep 2")
    folders.write_config(ffmpeg_path=str(wrapper))
    make_image(folders.inbox / "k2.png")
    (folders.inbox / "k2.yaml").write_text("num_frames: 7\n")
    daemon = start(folders.config)
    (job,) = wait_for(lambda: [j for j in folders.jobs_in_work()
                               if json.loads((j / "job.json").read_text()).get("encode_dir")],
                      what="the encode to start")
    out_dir = job / json.loads((job / "job.json").read_text())["encode_dir"]
    wait_for(lambda: processes_mentioning(str(out_dir)), what="ffmpeg to run")
    daemon.kill()
    wait_for(lambda: not processes_mentioning(str(out_dir)), timeout=5, what="the orphan encoder to die")
    assert start(folders.config, "--once").wait() == 0
    clip = decode(folders.outbox / "k2.mp4")
    assert clip.frames == 7 and folders.files("work") == []
    assert folders.metadata("k2")["job_id"] == job.name


def test_a_damaged_encode_is_never_published(folders: Folders, start: Start, tmp_path: Path) -> None:
    """Every output is decoded before publishing: a clip cut short is made again from the kept frames;
    one that stays damaged fails the job, and nothing of it reaches the outbox."""
    counter = tmp_path / "count"
    counter.write_text("0")
    # The first two encodes are truncated after ffmpeg wrote them, as a dying disk or encoder would.
    wrapper = tmp_path / "ffmpeg-wrapper"
    wrapper.write_text(f"""#!/bin/sh
"{imageio_ffmpeg.get_ffmpeg_exe()}" "$@"; rc=$?
case "$*" in *rawvideo*)
  n=$(cat {counter}); echo $((n + 1)) > {counter}
  if [ "$n" -lt 2 ]; then for f in "$@"; do case "$f" in *.mp4) truncate -s 2000 "$f";; esac; done; fi;;
esac
exit $rc
""")
    wrapper.chmod(0o755)
    folders.write_config(ffmpeg_path=str(wrapper), transient_retries=3)
    make_image(folders.inbox / "cut.png")
    assert start(folders.config, "--once").wait() == 0
    assert decode(folders.outbox / "cut.mp4").frames == 6
    assert folders.metadata("cut")["attempts"] == 2  # two damaged encodes, each made again

    counter.write_text("-100")  # from now on every encode is damaged
    make_image(folders.inbox / "bad.png")
    assert start(folders.config, "--once").wait() == 3
    report = folders.report("bad")
    assert report["stage"] == "postprocess" and "decode" in report["message"], report
    assert not any(name.startswith("bad") for name in folders.files("outbox"))


def test_a_job_that_keeps_killing_the_daemon_is_set_aside(folders: Folders, start: Start) -> None:
    """An OOM kill (here: a crash point) during generation, restart, killed again by the same job:
    after max_job_crashes deaths the job goes to failed/ and the queue behind it moves on."""
    make_image(folders.inbox / "1-poison.png")
    os.utime(folders.inbox / "1-poison.png", (1, 1))  # an mtime long ago changes nothing (issue 18)
    time.sleep(0.05)
    make_image(folders.inbox / "2-next.png", seed=2)  # arrives after 1-poison, which is taken first
    for _ in range(2):
        assert start(folders.config, "--once", I2V_CRASH_AT="generate.progress").wait() == -signal.SIGKILL
    assert folders.files("outbox") == []
    daemon = start(folders.config, "--once")
    assert daemon.wait() == 3
    report = folders.report("1-poison")
    assert report["stage"] == "crash" and "died 2 times in a row" in report["message"], report
    assert "memory" in report["hint"]
    assert decode(folders.outbox / "2-next.mp4").frames == 6 and folders.files("work") == []


def test_a_clean_stop_is_not_counted_as_a_death(folders: Folders, start: Start) -> None:
    folders.write_config(**SLOW, stop_timeout_s=0.0, max_job_crashes=1)
    make_image(folders.inbox / "a.png")
    (folders.inbox / "a.yaml").write_text("num_frames: 5\npostprocess: [archive, gif-preview]\n")
    daemon = start(folders.config)
    daemon.read_until("progress")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert start(folders.config, "--once").wait() == 0
    assert sorted(folders.files("outbox")) == ["a.gif-preview.gif", "a.jpg", "a.json", "a.mp4"]


def test_a_job_over_the_memory_budget_is_refused_before_generation(folders: Folders, start: Start) -> None:
    folders.write_config(memory_budget_mb=64)
    make_image(folders.inbox / "huge.png", (400, 300))
    (folders.inbox / "huge.yaml").write_text("num_frames: 512\nresolution: 2048p\n")
    make_image(folders.inbox / "fine.png")
    daemon = start(folders.config, "--once")
    assert daemon.wait() == 3
    report = folders.report("huge")
    assert report["stage"] == "sidecar" and "over the budget" in report["message"], report
    assert "512 frames of 2730x2048" in report["message"]
    assert "fits:" in report["hint"] and "at 2048p" in report["hint"], report["hint"]
    progress = [e for e in daemon.events() if e["event"] == "progress" and e.get("job") == "huge"]
    assert progress == []  # not one frame generated
    assert decode(folders.outbox / "fine.mp4").frames == 6


def test_checks_that_need_no_gpu_run_before_generation(folders: Folders, start: Start) -> None:
    """A job that cannot be published fails at the sidecar stage, before any frame is generated."""
    folders.write_config(**SLOW, postprocess_overridable={"encode": ["crf", "codec"], "fade": ["color"],
                                                         "scale_pad": ["color"]})
    sidecars = {
        "colour": "postprocess: vertical-1080x1920\npostprocess_overrides: {scale_pad: {color: blurple}}\n",
        "absent": "postprocess_overrides: {fade: {color: white}}\n",  # archive has no fade step
        "nvenc": "postprocess_overrides: {encode: {codec: h264_nvenc}}\n",  # no GPU here
        "longname": "output_name: " + "n" * 151 + "\n",
        "bidi": 'output_name: "gnp.\\u202eexe"\n',
        "options": "backend_options: {motion: spin}\n",
    }
    for name, text in sidecars.items():
        make_image(folders.inbox / f"{name}.png")
        (folders.inbox / f"{name}.yaml").write_text(text)
    make_image(folders.inbox / "strip.png", (2000, 100))  # 20:1, beyond any model
    daemon = start(folders.config, "--once")
    assert daemon.wait() == 3, daemon.log
    for name in [*sidecars, "strip"]:
        report = folders.report(name)
        assert report["stage"] in ("sidecar", "load"), (name, report)
    assert "blurple" in folders.report("colour")["message"]
    assert "has a fade step" in folders.report("absent")["message"]
    assert "h264_nvenc" in folders.report("nvenc")["message"]
    assert "150 bytes" in folders.report("longname")["message"]
    assert "U+202E" in folders.report("bidi")["message"]
    assert "aspect ratio" in folders.report("strip")["message"]
    assert [e for e in daemon.events() if e["event"] == "progress"] == []
    assert folders.files("outbox") == []


def test_names_near_the_filesystem_limit(folders: Folders, start: Start) -> None:
    """A 246-byte input name: outputs, moved inputs and the report are shortened to fit every suffix
    the daemon adds; nothing is refused late and nothing stays in the work folder."""
    long = "写" * 82  # 246 bytes of UTF-8
    make_image(folders.inbox / f"{long}.png")
    make_image(folders.inbox / "sub" / f"{long}.png")
    (folders.inbox / "sub" / f"{long}.yaml").write_text("num_frames: 0\n")  # fails: out of range
    daemon = start(folders.config, "--once")
    assert daemon.wait() == 3, daemon.log
    (clip,) = [n for n in folders.files("outbox") if n.endswith(".mp4")]
    assert len(clip.encode()) <= 160 and clip.startswith("写") and "~" in clip
    assert decode(folders.outbox / clip).frames == 6
    assert folders.metadata(clip[:-4])["input"]["path"] == f"{long}.png"
    (report,) = [n for n in folders.files("failed") if n.endswith(".error.json")]
    data = json.loads((folders.failed / report).read_text())
    assert data["input"] == f"sub/{long}" and data["stage"] == "sidecar"
    assert sorted(folders.files("failed")) == sorted([report, *[f"sub/{f}" for f in data["files"]]])
    assert folders.files("work") == [] and folders.files("inbox") == []
    assert all(len(Path(n).name.encode()) <= 255 for n in folders.files("done"))


def test_hostile_output_names_never_overwrite_across_daemons(folders: Folders, start: Start) -> None:
    """Two daemons, ten jobs, one output_name: ten distinct names, each clip beside its own metadata."""
    for index in range(10):
        make_image(folders.inbox / f"j{index}.png", seed=index)
        (folders.inbox / f"j{index}.yaml").write_text(f"output_name: same\nnum_frames: {3 + index}\n")
    configs = []
    for worker in ("w1", "w2"):
        config = folders.config.with_name(f"{worker}.toml")
        folders.write_config(worker_id=worker)
        config.write_text(folders.config.read_text())
        configs.append(config)
    runs = [start(config, "--once") for config in configs]
    assert [run.wait(timeout=120) for run in runs] == [0, 0]
    markers = [n for n in folders.files("outbox") if n.endswith(".json")]
    assert len(markers) == 10
    for marker in markers:
        meta = folders.metadata(marker[:-5])
        assert decode(folders.outbox / f"{meta['name']}.mp4").frames == meta["parameters"]["num_frames"]
    assert not [n for n in os.listdir(folders.outbox) if n.startswith(".")]  # no reservation, no .part


def test_a_stop_during_a_long_model_load_ends_start_up_at_once(folders: Folders, start: Start) -> None:
    folders.write_config(backend="slow-load", plugins=["slow_load"])
    make_image(folders.inbox / "a.png")
    daemon = start(folders.config, SLOW_LOAD_S="120")
    daemon.read_until("ffmpeg found")
    time.sleep(0.5)  # inside the load
    started = time.monotonic()
    daemon.signal(signal.SIGINT)
    assert daemon.wait(timeout=20) == 0
    assert time.monotonic() - started < 10
    events = [e["event"] for e in daemon.events()]
    assert "stopped during start-up" in events and "watching" not in events
    assert folders.files("inbox") == ["a.png"] and folders.files("work") == []


def test_a_misspelt_model_table_is_a_start_up_error(folders: Folders) -> None:
    folders.write_config(models={"i2vgen_xl": {"model": "/models/i2vgen-xl"}})
    result = cli("check-config", str(folders.config), env=daemon_env())
    assert result.returncode == 2
    assert "did you mean [models.i2vgen-xl]" in result.stderr


def test_a_sidecar_that_breaks_the_parser_is_a_sidecar_error(folders: Folders, start: Start) -> None:
    bad = {
        "unhashable": "? [a, b]\n: 1\n",
        "bigint": "seed: " + "9" * 5001 + "\n",
        "deep": "prompt: " + "[" * 20000 + "\n",
        "binary": "backend_options: {x: !!binary /w==}\n",
    }
    for name, text in bad.items():
        make_image(folders.inbox / f"{name}.png")
        (folders.inbox / f"{name}.yaml").write_text(text)
    make_image(folders.inbox / "date.png")
    (folders.inbox / "date.yaml").write_text("prompt: 2026-02-30\n")  # a date-looking prompt is text
    assert start(folders.config, "--once").wait() == 3
    for name in bad:
        report = folders.report(name)
        assert report["stage"] == "sidecar" and "unexpected" not in report["message"], (name, report)
    assert folders.metadata("date")["prompt"] == "2026-02-30"


def test_a_special_file_dropped_in_the_inbox_never_blocks(folders: Folders, start: Start) -> None:
    """A FIFO named like an image, with failed/ on the same filesystem: never opened, moved as it is."""
    os.mkfifo(folders.inbox / "x.png")
    make_image(folders.inbox / "ok.png")
    daemon = start(folders.config, "--once")
    assert daemon.wait(timeout=60) == 3
    assert stat.S_ISFIFO(os.lstat(folders.failed / "x.png").st_mode)
    assert "FIFO" in folders.report("x")["message"] or "special" in folders.report("x")["message"]
    assert decode(folders.outbox / "ok.mp4").frames == 6


@pytest.mark.parametrize("stage", ["claimed", "generated", "encoded", "publishing", "failing"])
def test_a_job_state_that_points_outside_is_never_followed(folders: Folders, start: Start,
                                                           tmp_path: Path, stage: str) -> None:
    """job.json sits on the shared work folder: one that names paths outside is left alone, loudly."""
    job = folders.work / "testhost" / "20260101T000000Z-0123abcd"
    (job / "input").mkdir(parents=True)
    victim = tmp_path / "victim.png"
    make_image(victim)
    state = {"job_id": job.name, "worker_id": "testhost", "stage": stage, "key": "../../../victim",
             "inputs": ["../../victim.png"], "image": "../../victim.png"}
    (job / "job.json").write_text(json.dumps(state))
    daemon = start(folders.config, "--once")
    assert daemon.wait() == 0
    assert victim.exists() and (job / "job.json").exists()
    assert any(e["event"].startswith("job folder left alone") for e in daemon.events())
    assert folders.files("outbox") == [] and folders.files("failed") == []
