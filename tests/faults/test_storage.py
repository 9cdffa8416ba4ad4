"""Storage faults, on real mounts: an outbox that fills up, and a failed/ folder on another filesystem
than the inbox, where links and special files cannot be moved by a rename. Every input ends up
accounted for exactly once: one published clip, or one report."""

from __future__ import annotations

import json
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import Folders, decode, make_image, wait_for

from .conftest import Spawn, Tmpfs, entries, hidden, kind, visible

Mount = Callable[[Path, str], Tmpfs]
MiB = 1024 * 1024
HELD = "cannot write a destination folder: job kept in the work folder, will retry"
# Noise compresses badly, losslessly even less: 16 frames at 512x512 come out at about 3 MB, well above
# the 2 MB outbox (checked below on the published clip).
BIG_SIDECAR = ("num_frames: 16\nresolution: 512p\npostprocess: archive\nseed: 5\n"
               "postprocess_overrides: {encode: {crf: 0}}\n")
BIG_FRAMES = 16


def noise_image(path: Path, size: tuple[int, int] = (512, 512), seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def published(*names: str) -> list[str]:
    return sorted(f"{name}{suffix}" for name in names for suffix in (".jpg", ".json", ".mp4"))


def job_stage(job_dir: Path) -> str:
    stage: str = json.loads((job_dir / "job.json").read_text())["stage"]
    return stage


def test_a_full_outbox_keeps_the_job_serves_the_next_and_publishes_it_when_space_returns(
        folders: Folders, spawn: Spawn, tmpfs: Mount) -> None:
    outbox = tmpfs(folders.outbox, "2m")
    folders.write_config(retry_backoff_s=0.5, retry_backoff_max_s=1.0)
    noise_image(folders.inbox / "big.png")
    (folders.inbox / "big.yaml").write_text(BIG_SIDECAR)
    old = time.time() - 600  # taken first: the oldest job
    for name in ("big.png", "big.yaml"):
        os.utime(folders.inbox / name, (old, old))
    make_image(folders.inbox / "small.png")

    daemon = spawn(folders.config)
    frozen = daemon.freeze_on(HELD, job="big")
    assert frozen.wait(120), f"the big job was never held:\n{daemon.log}"
    try:  # frozen the instant it logged the failed write: its partial file must be gone already
        assert not [p for p in entries(outbox.path) if p.endswith(".part")], entries(outbox.path)
        assert visible(outbox.path) == []
        assert outbox.free_bytes() > 2 * MiB - 64 * 1024, "space is still taken by a partial file"
    finally:
        daemon.resume()
    held = daemon.find(HELD, job="big")[0]
    assert held["level"] == "error" and "No space left" in held["error"], held

    wait_for(lambda: (folders.done / "small.png").exists() and len(folders.jobs_in_work()) == 1, 60,
             "the small job to be published and its folder removed")
    assert visible(folders.outbox) == published("small")
    (job_dir,) = folders.jobs_in_work()
    assert job_stage(job_dir) in ("encoded", "publishing")
    assert entries(folders.failed) == {} and not daemon.find("failed")
    wait_for(lambda: len(daemon.find(HELD, job="big")) >= 2, 60, "the held job to be tried again")
    assert visible(folders.outbox) == published("small")

    outbox.resize("64m")
    wait_for(lambda: (folders.done / "big.png").exists(), 60, "the big job to be published")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.log
    assert "Traceback" not in daemon.log  # every problem above is expected: none is a crash

    assert visible(folders.outbox) == published("big", "small")
    assert hidden(folders.outbox) == []  # no .part, no name reservation left behind
    assert (folders.outbox / "big.mp4").stat().st_size > 2 * MiB  # it really could not fit
    assert decode(folders.outbox / "big.mp4").frames == BIG_FRAMES
    assert folders.metadata("big")["name"] == "big"
    assert folders.files("done") == ["big.png", "big.yaml", "small.png"]
    assert entries(folders.inbox) == {} and entries(folders.work) == {} and entries(folders.failed) == {}
    assert not daemon.find("failed")


def bind_socket(path: Path) -> None:
    """A unix socket file at path (bound where the path is short enough, then renamed into place)."""
    with socket.socket(socket.AF_UNIX) as sock:
        if len(os.fsencode(path)) < 100:
            sock.bind(str(path))
            return
        short = Path(tempfile.mkdtemp()) / "s"
        sock.bind(str(short))
        os.rename(short, path)
        short.parent.rmdir()


def drop_specials(folders: Folders, tmp_path: Path) -> tuple[Path, Path]:
    """A link to a secret outside the inbox (alone, and with a sidecar), a FIFO, a link to a folder and
    a socket, all named like images; and one good image. Returns the secret and the folder."""
    secret = make_image(tmp_path / "secret.png", seed=99)
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "inside.png").write_bytes(secret.read_bytes())
    inbox = folders.inbox
    (inbox / "p.png").symlink_to(secret)
    (inbox / "q.png").symlink_to(secret)
    (inbox / "q.yaml").write_text("prompt: follow me\n")
    os.mkfifo(inbox / "x.png")
    (inbox / "d.png").symlink_to(folder, target_is_directory=True)
    bind_socket(inbox / "s.png")
    make_image(inbox / "good.png")
    return secret, folder


SPECIALS = {"p.png": "link", "q.png": "link", "x.png": "fifo", "d.png": "link", "s.png": "socket"}
KIND_IN_REPORT = {"p.png": "a symbolic link", "q.png": "a symbolic link", "x.png": "a FIFO (named pipe)",
                  "d.png": "a symbolic link", "s.png": "a socket"}


def test_links_and_special_files_stay_in_the_inbox_when_failed_is_on_another_filesystem(
        folders: Folders, spawn: Spawn, tmpfs: Mount, tmp_path: Path) -> None:
    tmpfs(folders.failed, "64m")
    secret, folder = drop_specials(folders, tmp_path)
    secret_bytes = secret.read_bytes()
    targets = {name: os.readlink(folders.inbox / name) for name, what in SPECIALS.items() if what == "link"}

    daemon = spawn(folders.config, "--once")
    assert daemon.wait(timeout=120) == 3, daemon.log  # never blocks on the FIFO

    assert visible(folders.outbox) == published("good") and hidden(folders.outbox) == []
    assert folders.files("done") == ["good.png"]
    assert entries(folders.inbox) == SPECIALS  # each left as what it was, never replaced by a copy
    assert {name: os.readlink(folders.inbox / name) for name in targets} == targets
    for name, what in KIND_IN_REPORT.items():
        report = folders.report(name.removesuffix(".png"))
        assert report["left_in_inbox"] == {name: what}, report
        assert report["stage"] == "watch" and name in report["hint"], report
        assert report["files"] == (["q.yaml"] if name == "q.png" else []), report
    assert (folders.failed / "q.yaml").read_text() == "prompt: follow me\n"  # the sidecar moved
    assert entries(folders.failed) == {"p.error.json": "file", "q.error.json": "file", "q.yaml": "file",
                                       "x.error.json": "file", "d.error.json": "file", "s.error.json": "file"}
    for path in folders.failed.rglob("*"):  # nothing in failed/ holds the secret's bytes
        assert secret_bytes not in path.read_bytes(), path
    assert secret.read_bytes() == secret_bytes and entries(folder) == {"inside.png": "file"}
    assert entries(folders.work) == {}

    reports = {name: (folders.failed / name).read_bytes() for name in entries(folders.failed)}
    again = spawn(folders.config, "--once")
    assert again.wait(timeout=120) == 0, again.log  # remembered through the reports: nothing new
    assert {name: (folders.failed / name).read_bytes() for name in entries(folders.failed)} == reports
    assert entries(folders.inbox) == SPECIALS and entries(folders.work) == {}
    assert not again.find("failed")


def test_links_and_special_files_move_to_failed_as_they_are_and_never_block_a_stop(
        folders: Folders, spawn: Spawn, tmp_path: Path) -> None:
    """failed/ on the inbox's filesystem: each is renamed there as what it is (a link stays a link, its
    target untouched); a running daemon then stops at once on SIGTERM. (The link with a sidecar is
    covered in tests/test_hostile.py.)"""
    secret, folder = drop_specials(folders, tmp_path)
    (folders.inbox / "q.png").unlink()
    (folders.inbox / "q.yaml").unlink()
    specials = {k: v for k, v in SPECIALS.items() if k != "q.png"}
    targets = {name: os.readlink(folders.inbox / name) for name, what in specials.items() if what == "link"}
    secret_bytes = secret.read_bytes()

    daemon = spawn(folders.config)
    wait_for(lambda: all((folders.failed / f"{n.removesuffix('.png')}.error.json").exists() for n in specials)
             and (folders.done / "good.png").exists(), 60, "every drop to be done or reported")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0, daemon.log
    assert "Traceback" not in daemon.log

    assert entries(folders.failed) == {**specials, **{f"{n.removesuffix('.png')}.error.json": "file"
                                                      for n in specials}}
    assert {name: os.readlink(folders.failed / name) for name in targets} == targets
    for name in specials:
        report = folders.report(name.removesuffix(".png"))
        assert report["files"] == [name] and "left_in_inbox" not in report, report
    assert secret.read_bytes() == secret_bytes and entries(folder) == {"inside.png": "file"}
    assert visible(folders.outbox) == published("good")
    assert entries(folders.inbox) == {} and entries(folders.work) == {}


def test_a_fifo_claimed_when_the_daemon_died_never_blocks_the_recovery(folders: Folders,
                                                                       spawn: Spawn) -> None:
    os.mkfifo(folders.inbox / "x.png")
    (folders.inbox / "x.yaml").write_text("prompt: x\n")
    crashed = spawn(folders.config, "--once", I2V_CRASH_AT="claim.after_rename")
    assert crashed.wait(timeout=60) == -signal.SIGKILL, crashed.log
    (job_dir,) = folders.jobs_in_work()
    assert kind(job_dir / "input" / "x.png") == "fifo"  # the crash came after the FIFO's rename

    again = spawn(folders.config, "--once")
    assert again.wait(timeout=60) == 3, again.log
    assert entries(folders.failed) == {"x.png": "fifo", "x.yaml": "file", "x.error.json": "file"}
    assert folders.report("x")["files"] == ["x.png", "x.yaml"]
    assert entries(folders.inbox) == {} and entries(folders.work) == {} and entries(folders.outbox) == {}
