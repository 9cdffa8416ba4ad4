"""The job's metadata record, built where its facts are known: at generation (the input, the
parameters, the backend and what it recorded) and at the encode (the presets and the files to publish).
publish.py turns it into the outbox's `<name>.json`."""

from __future__ import annotations

import platform
from typing import Any

from i2v_watcher import __version__
from i2v_watcher.backends import Backend, Frames
from i2v_watcher.backends.loading import package_versions
from i2v_watcher.job.records import InputFile, PostprocessInfo, StagedMetadata, StagedOutput
from i2v_watcher.job.spec import JobParams, JobSpec
from i2v_watcher.job.state import Job
from i2v_watcher.media.ffmpeg import FFmpeg
from i2v_watcher.media.graph import Output
from i2v_watcher.media.images import Source
from i2v_watcher.media.soundtrack import Soundtrack
from i2v_watcher.run.prompting import prompt_source
from i2v_watcher.run.variants import variant_record


def library_versions() -> dict[str, str]:
    return {"i2v_watcher": __version__, "python": platform.python_version(),
            **package_versions(("numpy", "pillow", "pydantic", "ffmpeg-python"))}


def generated_metadata(job: Job, spec: JobSpec, params: JobParams, backend: Backend, source: Source,
                       notes: list[str], frames: Frames, timings: dict[str, float],
                       ffmpeg: FFmpeg, sound: Soundtrack | None = None) -> StagedMetadata:
    """The metadata of a job just generated; the frames' rate is kept for the encode. The input's
    digest and size are those of the bytes the image was decoded from, never the file read again: its
    content could have changed meanwhile. `sound`: the soundtrack kept with the frames, if any."""
    assert job.state.image is not None
    path = job.input(job.state.image)
    image = source.image
    parameters = params.model_dump(mode="json", exclude={"explicit", "from_model", "from_level"})
    caption = job.state.caption if prompt_source(job, params) == "caption" else None
    if caption is not None:
        timings = {**timings, "caption": caption.seconds}
    record = InputFile(path=f"{job.state.key}{path.suffix}", image=job.state.image, sidecar=job.state.sidecar,
                       sha256=source.sha256, bytes=source.size, width=image.width, height=image.height)
    return StagedMetadata(
        job_id=job.id, input=record, prompt=params.prompt, negative_prompt=params.negative_prompt,
        prompt_source=prompt_source(job, params), caption=None if caption is None else caption.text,
        seed=params.seed, backend=backend.name, model=backend.model_id,
        parameters=parameters, quality_level=params.quality,
        quality_set={key: parameters[key] for key in sorted(params.from_level)},
        requested=spec.model_dump(mode="json", exclude_unset=True), notes=notes, generation=frames.details,
        timings_s={k: round(v, 3) for k, v in timings.items()},
        versions={**library_versions(), "ffmpeg": ffmpeg.version, **backend.versions()},
        worker_id=job.state.worker_id, claimed_at=job.state.claimed_at, frames_fps=frames.fps,
        audio=None if sound is None else sound.record(),
        draft=None if spec.draft is None else spec.draft.model_dump(), variant=variant_record(job, spec))


def encoded_metadata(metadata: StagedMetadata, info: dict[str, Any], outputs: list[Output],
                     seconds: float) -> StagedMetadata:
    """The metadata once encoded: what the encode made, and the files to publish in their order."""
    return metadata.model_copy(update={
        "frames_fps": None, "postprocess": PostprocessInfo.model_validate(info),
        "outputs": [StagedOutput(file=o.file, suffix=o.suffix) for o in outputs],
        "timings_s": {**metadata.timings_s, "postprocess": round(seconds, 3)}})
