"""A clip with a soundtrack through the post-processing chain, in process: every step with sound in one
ffmpeg run (the sound's length, pitch, fades, loops and reversal heard in the decoded outputs), the
outputs that cannot carry sound, a preset and a sidecar that drop it, the checks of what was written, and
the WAV the sound is kept in between the stages. The real daemon: tests/faults/test_soundtrack.py."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from i2v_watcher.backends.base import Audio
from i2v_watcher.config.settings import Preset, Settings
from i2v_watcher.errors import JobError, OutputInvalid
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.job.records import JobState, StagedMetadata
from i2v_watcher.job.spec import JobDefaults, JobSpec, resolve
from i2v_watcher.job.state import Job
from i2v_watcher.media.chains import Chain, build_chains, check_chains
from i2v_watcher.media.cost import chain_cost
from i2v_watcher.media.ffmpeg import FFmpeg, find_ffmpeg
from i2v_watcher.media.graph import postprocess
from i2v_watcher.media.probes import chain_problems
from i2v_watcher.media.soundtrack import Soundtrack, audio_problem, read_soundtrack, write_wav
from i2v_watcher.media.verify import verify_video
from i2v_watcher.run.soundtrack import check_audio, keep_soundtrack, kept_soundtrack, soundtrack_lost
from i2v_watcher.steps import Clip, dump_step
from i2v_watcher.steps.speed import tempo_chain

FPS, FRAMES, RATE, HZ = 8.0, 16, 24000, 440.0
ENCODE = {"step": "encode", "codec": "libx264", "crf": 35, "preset": "ultrafast"}
PRESETS = {
    "plain": [ENCODE],
    "fps": [{"step": "fps", "fps": 24}, ENCODE],
    "slow": [{"step": "speed", "factor": 0.3}, ENCODE],  # atempo 0.5 x 0.6
    "fast": [{"step": "speed", "factor": 3}, ENCODE],  # atempo 2 x 1.5
    "loop": [{"step": "loop", "count": 3}, ENCODE],
    "boomerang": [{"step": "loop", "count": 1, "boomerang": True}, ENCODE],
    "fade": [{"step": "fade", "in_s": 0.5, "out_s": 0.5}, ENCODE],
    "smooth": [{"step": "crop", "width": 32, "height": 32},
               {"step": "interpolate", "fps": 16, "mode": "blend"},
               {"step": "scale_pad", "width": 48, "height": 32}, ENCODE],
    "silent": [{**ENCODE, "audio": False}],
    "vp9": [{"step": "encode", "codec": "libvpx-vp9", "crf": 50}],
    "gif": [{"step": "gif", "fps": 8, "width": 32}],
    "webp": [{"step": "webp", "fps": 8, "width": 32}],
    "still": [{"step": "poster", "frame": 3}],
}
SILENT = ("silent", "gif", "webp", "still")
Encoded = tuple[dict[str, Path], dict[str, Any]]  # each preset's file, and what the metadata says of it


def rising_tone(seconds: float) -> np.ndarray:
    """Stereo 440 Hz, its loudness rising from 0.1 to 0.9: a loop or a reversal shows in the envelope."""
    t = np.arange(round(seconds * RATE)) / RATE
    left = (0.1 + 0.8 * t / seconds) * np.sin(2 * np.pi * HZ * t)
    return np.stack([left, left]).astype(np.float32)


def heard(binary: FFmpeg, path: Path) -> np.ndarray:
    """The file's sound, decoded to mono float samples at RATE (no ffprobe here: ffmpeg itself)."""
    result = subprocess.run([binary.path, "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:a",
                             "-ac", "1", "-ar", str(RATE), "-f", "f32le", "-"],
                            capture_output=True, check=True)
    return np.frombuffer(result.stdout, dtype="<f4")


def pitch(sound: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(sound * np.hanning(len(sound))))
    return float(np.fft.rfftfreq(len(sound), 1 / RATE)[spectrum.argmax()])


def loudness(sound: np.ndarray, start_s: float, end_s: float) -> float:
    part = sound[round(start_s * RATE):round(end_s * RATE)]
    return float(np.sqrt(np.mean(part**2)))


@pytest.fixture(scope="module")
def binary() -> FFmpeg:
    return find_ffmpeg(None)[0]


@pytest.fixture(scope="module")
def encoded(binary: FFmpeg, tmp_path_factory: pytest.TempPathFactory) -> Encoded:
    """Every preset above from one clip with a 2.1 s soundtrack (its frames last 2 s), in one run."""
    tmp = tmp_path_factory.mktemp("sound")
    settings = Settings(**{n: str(tmp / n) for n in ("inbox", "outbox", "failed", "done", "work")})
    pixels = np.random.default_rng(1).integers(0, 255, (FRAMES, 48, 64, 3), dtype=np.uint8)
    sound = write_wav(tmp / "soundtrack.wav", rising_tone(FRAMES / FPS + 0.1), RATE)
    chains: list[Chain] = [(name, Preset(steps=steps).chain()) for name, steps in PRESETS.items()]
    outputs, info = postprocess(pixels, FPS, tmp / "out", binary, chains, settings, Checkpoint(), sound)
    files = {name: tmp / "out" / output.file for name, output in zip(PRESETS, outputs, strict=False)}
    return files, {o["preset"]: o for o in info["outputs"]}


def test_every_step_keeps_sound_and_picture_together(encoded: Encoded, binary: FFmpeg) -> None:
    files, described = encoded
    source = Clip(64, 48, FRAMES, FPS)
    for name, steps in PRESETS.items():
        audio = described[name].get("audio")
        if name in SILENT:
            assert audio is None, name
            continue
        planned = chain_cost(name, Preset(steps=steps).chain(), source).output  # the cost model's clip
        codec = "opus" if name == "vp9" else "aac"
        assert audio["codec"] == codec and audio["bitrate"] == "128k" and audio["channels"] == 2, name
        assert audio["duration_s"] == pytest.approx(planned.duration, abs=0.025), name
        assert len(heard(binary, files[name])) / RATE == pytest.approx(planned.duration, abs=0.025), name
    assert described["plain"]["audio"]["rate"] == RATE and described["vp9"]["audio"]["rate"] == 48000
    assert described["loop"]["audio"]["duration_s"] == 6.0
    assert described["slow"]["audio"]["duration_s"] == 6.625


def test_speed_keeps_the_pitch_and_loops_and_fades_are_heard(encoded: Encoded, binary: FFmpeg) -> None:
    files, _ = encoded
    names = ("plain", "slow", "fast", "loop", "boomerang", "fade")
    sound = {name: heard(binary, files[name]) for name in names}
    for name in ("plain", "slow", "fast"):  # asetrate would have made 440 Hz 132 Hz and 1320 Hz
        assert pitch(sound[name]) == pytest.approx(HZ, abs=10), name
    # The loudness rises over each of the three plays, and falls back at each start.
    loop = [loudness(sound["loop"], start + 0.1, start + 0.3) for start in (0, 2, 4)]
    ends = [loudness(sound["loop"], start + 1.7, start + 1.9) for start in (0, 2, 4)]
    assert all(end > 3 * begin for begin, end in zip(loop, ends, strict=True))
    # A boomerang: loud in the middle, where it turns, quiet at both ends.
    boomerang = sound["boomerang"]
    turn = loudness(boomerang, 1.8, 2.2)
    assert turn > 3 * loudness(boomerang, 0.05, 0.3) and turn > 3 * loudness(boomerang, 3.7, 3.95)
    # Faded with the picture: silent at the start and after the last frame's time, as loud in between.
    plain, fade = sound["plain"], sound["fade"]
    assert loudness(fade, 0, 0.05) < 0.1 * loudness(plain, 0, 0.05)
    assert loudness(fade, 1.9, 2.0) < 0.02 * loudness(plain, 1.9, 2.0)
    assert loudness(fade, 0.8, 1.2) == pytest.approx(loudness(plain, 0.8, 1.2), rel=0.1)


def test_outputs_are_checked_for_the_sound_they_should_have(encoded: Encoded, binary: FFmpeg) -> None:
    files, _ = encoded
    with pytest.raises(OutputInvalid, match="no whole sound track"):
        verify_video(binary, files["silent"], FRAMES, Checkpoint(), 30, audio=True)
    with pytest.raises(OutputInvalid, match="sound track where none was asked for"):
        verify_video(binary, files["plain"], FRAMES, Checkpoint(), 30, audio=False)
    assert verify_video(binary, files["gif"], None, Checkpoint(), 30) is None


def test_a_silent_clip_gets_no_second_input(binary: FFmpeg, tmp_path: Path) -> None:
    settings = Settings(**{n: str(tmp_path / n) for n in ("inbox", "outbox", "failed", "done", "work")})
    pixels = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    _, info = postprocess(pixels, FPS, tmp_path / "out", binary, [("plain", Preset(steps=[ENCODE]).chain())],
                          settings, Checkpoint())
    assert info["ffmpeg_command"].count("-i") == 1 and "audio" not in info["outputs"][0]


def test_a_sidecar_may_drop_the_sound_and_only_a_dropped_one_is_recorded(tmp_path: Path) -> None:
    settings = Settings(**{n: str(tmp_path / n) for n in ("inbox", "outbox", "failed", "done", "work")},
                        postprocess_overridable={"encode": ["crf", "audio"]})
    spec = JobSpec(postprocess=["archive"], postprocess_overrides={"encode": {"audio": False}})
    ((_, steps),) = build_chains(settings, resolve(spec, JobDefaults(), backend="preview", seed=1))
    assert dump_step(steps[-1])["audio"] is False
    ((_, kept),) = build_chains(settings, resolve(JobSpec(postprocess=["archive"]), JobDefaults(),
                                                  backend="preview", seed=1))
    assert "audio" not in dump_step(kept[-1])  # the steps of a preset that keeps it, recorded as before
    default = Settings(**{n: str(tmp_path / n) for n in ("inbox", "outbox", "failed", "done", "work")})
    (refused,) = check_chains(default, resolve(spec, JobDefaults(), backend="preview", seed=1)).problems
    assert "encode.audio cannot be overridden" in refused.text  # unless the operator allows it


def test_the_tempo_chain_stays_where_atempo_blends_every_sample() -> None:
    for factor in (0.1, 0.3, 0.5, 0.7, 1.0, 2.0, 3.0, 4.0, 10.0):
        chain = tempo_chain(factor)
        assert all(0.5 <= step <= 2 for step in chain) and np.prod(chain) == pytest.approx(factor)
    assert tempo_chain(0.1) == [0.5, 0.5, 0.5, 0.8] and tempo_chain(4.0) == [2.0, 2.0]


def test_an_ffmpeg_without_the_sound_filters_or_encoder_is_refused_at_start_up(binary: FFmpeg) -> None:
    lacking = FFmpeg(binary.path, binary.version, binary.encoders - {"aac"}, binary.filters - {"atempo"})
    problems = chain_problems([("slow", Preset(steps=PRESETS["slow"]).chain())], lacking, None)
    assert problems == ["preset 'slow': ffmpeg has no 'atempo' filter (step speed)",
                        "preset 'slow': ffmpeg has no 'aac' encoder"]
    silent = [("silent", Preset(steps=PRESETS["silent"]).chain())]
    assert chain_problems(silent, lacking, None) == []


def test_the_sound_is_kept_as_a_whole_wav_and_a_backends_sound_is_checked(tmp_path: Path) -> None:
    kept = write_wav(tmp_path / "s.wav", np.array([[0.5, -2.0, 0.0]], dtype=np.float32), 8000)
    assert read_soundtrack(tmp_path / "s.wav") == Soundtrack(tmp_path / "s.wav", 8000, 1, 3 / 8000)
    with wave.open(str(kept.path)) as wav:
        assert np.frombuffer(wav.readframes(3), "<i2").tolist() == [16384, -32767, 0]  # clipped to [-1, 1]
    data = kept.path.read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:-2])
    assert read_soundtrack(tmp_path / "cut.wav") is None and read_soundtrack(tmp_path / "none.wav") is None
    stereo = np.zeros((2, 10), dtype=np.float32)
    assert audio_problem(stereo, 24000) is None
    assert audio_problem(stereo.astype(np.float64), np.int64(24000)) is None  # a pipeline's numbers
    assert "not (channels, samples) float32" in str(audio_problem(stereo.astype(np.int16), 24000))
    assert "not (channels, samples) float32" in str(audio_problem(stereo[0], 24000))
    assert "3 channels" in str(audio_problem(np.zeros((3, 10), dtype=np.float32), 24000))
    assert "samples a second" in str(audio_problem(stereo, 100))
    assert "not numbers" in str(audio_problem(np.full((1, 4), np.nan, dtype=np.float32), 24000))


def test_a_job_keeps_its_sound_in_its_folder_and_one_whose_sound_is_gone_is_generated_again(
        tmp_path: Path) -> None:
    state = JobState(job_id="20261207T000000Z-00000000", worker_id="testhost", stage="claimed", key="a",
                     inputs=[])
    job = Job(tmp_path, state)
    kept = keep_soundtrack(job, Audio(rising_tone(0.5), RATE))
    assert kept is not None and kept.path == tmp_path / "soundtrack.wav" and kept.channels == 2
    job.advance("generated", metadata=StagedMetadata(job_id=job.id, audio=kept.record()))
    assert kept_soundtrack(job) == Soundtrack(kept.path, RATE, 2, 0.5) and not soundtrack_lost(job)
    kept.path.unlink()
    assert soundtrack_lost(job)  # pipeline: generated again, as when the frames' copy is gone
    (tmp_path / "soundtrack.wav").write_bytes(b"RIFF")
    assert soundtrack_lost(job)
    assert keep_soundtrack(job, None) is None and not (tmp_path / "soundtrack.wav").exists()  # silent now
    with pytest.raises(JobError, match="3 channels"):
        check_audio(Audio(np.zeros((3, 10), dtype=np.float32), RATE))
