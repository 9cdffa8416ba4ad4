"""A job's soundtrack between its two stages: the sound a backend generated with the frames (Frames.audio)
is written into the job's work folder before the job is marked generated, and the encode reads it from
there (media.soundtrack). It lives and goes with the job's folder: a restart that resumes the encode has
it, a takeover moves it, the job's end removes it. The metadata's `audio` says the job has one."""

from __future__ import annotations

from i2v_watcher.backends.base import Audio
from i2v_watcher.errors import JobError
from i2v_watcher.job.state import Job
from i2v_watcher.media.soundtrack import Soundtrack, audio_problem, read_soundtrack, write_wav

WAV_NAME = "soundtrack.wav"


def check_audio(audio: Audio | None) -> None:
    """Refuse sound a backend returned that cannot be encoded (the frames are checked alike)."""
    problem = None if audio is None else audio_problem(audio.samples, audio.rate)
    if problem is not None:
        raise JobError(problem, stage="generate")


def keep_soundtrack(job: Job, audio: Audio | None) -> Soundtrack | None:
    """Write the sound into the job's folder (whole or absent after a crash); a silent generation
    removes the sound of an earlier one (a job generated again)."""
    target = job.dir / WAV_NAME
    try:
        if audio is None:
            target.unlink(missing_ok=True)
            return None
        return write_wav(target, audio.samples, audio.rate)
    except FileNotFoundError:
        job.check_owned()  # another worker took the job's folder over: JobLost
        raise


def kept_soundtrack(job: Job) -> Soundtrack | None:
    """The sound of a generated job as its metadata records it, for the encode (which fails, loudly,
    should the file be gone); None for a silent job."""
    metadata = job.state.metadata
    sound = None if metadata is None else metadata.audio
    if sound is None:
        return None
    return Soundtrack(job.dir / WAV_NAME, int(sound["rate"]), int(sound["channels"]),
                      float(sound["duration_s"]))


def soundtrack_lost(job: Job) -> bool:
    """A job generated with sound whose sound file is not whole (removed by hand, a folder copied
    without it): it is generated again, as when its frames are lost."""
    return kept_soundtrack(job) is not None and read_soundtrack(job.dir / WAV_NAME) is None
