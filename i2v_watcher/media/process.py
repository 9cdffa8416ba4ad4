"""The ffmpeg process runner: ffmpeg in its own session, fed on stdin, its progress lines watched, killed
when the daemon aborts, dies or when ffmpeg falls silent; its stderr's tail when it fails."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import IO

from i2v_watcher.errors import FfmpegStalled, JobError
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.media.ffmpeg import child_env

STDERR_LINES = 20
PR_SET_PDEATHSIG = 1


@functools.cache
def _pdeathsig_wrapper() -> tuple[str, ...]:
    """`setpriv --pdeathsig KILL --` where util-linux has it (2.33 and later): it sets what
    _die_with_parent sets, then execs ffmpeg. Without a preexec_fn Python starts the child with vfork
    instead of forking the whole daemon: measured here, 17-21 ms a start against 53 ms with torch
    imported and 157 ms with 2 GB resident, twice a job. Its one difference: no check that the daemon
    is still there once the signal is set; an ffmpeg orphaned in that moment finds its stdin closed
    and ends, in an output folder no later attempt publishes."""
    found = shutil.which("setpriv")
    if found is None:
        return ()
    try:
        usage = subprocess.run([found, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return (found, "--pdeathsig", "KILL", "--") if "--pdeathsig" in usage else ()


def _die_with_parent() -> None:
    """In the child, before ffmpeg starts: the kernel kills it when the daemon dies (kill -9 too), so
    an orphaned encoder never goes on writing into a job that a restarted daemon runs again."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        os._exit(126)
    if os.getppid() == 1:  # the daemon died before prctl took effect
        os._exit(126)


def run_ffmpeg(command: list[str], stdin: bytes | memoryview, checkpoint: Checkpoint, stall_s: float,
               progress: list[str] | None = None, errors: list[str] | None = None,
               report: Callable[[dict[str, str]], None] | None = None, limit_s: float | None = None) -> None:
    """Run ffmpeg with the frames on stdin. It runs in its own session, so a Ctrl-C or a service stop
    reaches the daemon (which decides) and not ffmpeg; it is killed when the daemon aborts, when its
    progress output stops for `stall_s` (slow is fine, silent is hung) or when it has run `limit_s`
    (max_encode_s: working, but for too long); its stderr tail on failure.
    `progress` receives its progress lines, `errors` its stderr lines (the first 100), `report` (called
    on this thread) each block of `-progress` lines as a dict, the last one included."""
    started = time.monotonic()
    wrapper = _pdeathsig_wrapper()
    process = subprocess.Popen([*wrapper, *command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=child_env(), start_new_session=True,
                               preexec_fn=None if wrapper else _die_with_parent)
    assert process.stdin and process.stdout and process.stderr
    last_progress = [time.monotonic()]
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)

    def feed(pipe: IO[bytes]) -> None:
        # When ffmpeg stops reading early, its exit code and stderr say why.
        with contextlib.suppress(BrokenPipeError, ValueError):
            pipe.write(stdin)
        with contextlib.suppress(BrokenPipeError):
            pipe.close()

    blocks: list[dict[str, str]] = []  # the latest complete -progress block, for `report`

    def watch_progress(pipe: IO[bytes]) -> None:
        block: dict[str, str] = {}
        for line in pipe:  # ffmpeg's progress lines are the daemon's progress points while it encodes
            last_progress[0] = time.monotonic()
            checkpoint.activity.touch()
            text = line.decode("ascii", "replace").strip()
            if progress is not None:
                progress.append(text)
            key, _, value = text.partition("=")
            block[key] = value
            if key == "progress":  # a block's last line
                blocks[:], block = [block], {}

    def keep_tail(pipe: IO[bytes]) -> None:
        for line in pipe:
            text = line.decode("utf-8", "replace").rstrip()
            tail.append(text)
            if errors is not None and text and len(errors) < 100:
                errors.append(text)

    exited = threading.Event()

    def wait() -> None:
        process.wait()
        exited.set()  # wakes the loop below the moment ffmpeg exits (Popen.wait(timeout) would poll)

    threads = [threading.Thread(target=fn, args=(pipe,), daemon=True) for fn, pipe in
               ((feed, process.stdin), (watch_progress, process.stdout), (keep_tail, process.stderr))]
    threads.append(threading.Thread(target=wait, daemon=True))
    for thread in threads:
        thread.start()
    reported: dict[str, str] | None = None

    def report_latest() -> None:
        nonlocal reported
        latest = blocks[-1] if blocks else None
        if report is not None and latest is not None and latest is not reported:
            reported = latest
            report(latest)

    try:
        while not exited.wait(0.05):
            checkpoint.poll()
            report_latest()
            if time.monotonic() - last_progress[0] > stall_s:
                raise FfmpegStalled(f"ffmpeg made no progress for {stall_s:g} s and was stopped (hung)")
            if limit_s is not None and time.monotonic() - started > limit_s:
                raise JobError(f"the encode took longer than its limit of {limit_s:.4g} s (max_encode_s) "
                               "and was stopped", stage="postprocess",
                               hint="ask for fewer, shorter or smaller outputs, or ask the operator to "
                                    "raise max_encode_s")
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        for thread in threads:
            thread.join(timeout=5)
    report_latest()  # the end
    if process.returncode != 0:
        raise JobError(
            f"ffmpeg failed with exit code {process.returncode}: " + (" | ".join(tail) or "(no output)"),
            stage="postprocess", hint="command: " + " ".join(command))
