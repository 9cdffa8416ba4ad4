"""`encode`: the one video encode of a preset, into MP4 (WebM for libvpx-vp9): codec, quality, speed,
pixel format, bitrate caps; and the clip's soundtrack, where the model made one and `audio` keeps it:
AAC at 128 kb/s in MP4 (the original WebUI's `-c:a aac -b:a 128k`), Opus at 128 kb/s in WebM (which
cannot hold AAC)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import ffmpeg
from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from i2v_watcher.steps import register
from i2v_watcher.steps.base import Clip, OutputStep

X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                "veryslow")
NVENC_PRESETS = ("p1", "p2", "p3", "p4", "p5", "p6", "p7")
HARDWARE = ("h264_nvenc", "hevc_nvenc")
Bitrate = Field(default=None, pattern=r"^\d{1,6}(\.\d{1,3})?[kM]$")  # "8M", "2500k"
AUDIO_BITRATE = "128k"
AUDIO_CODECS = {".mp4": "aac", ".webm": "libopus"}


@register
class Encode(OutputStep):
    name = "encode"
    # x264 `slow` at 512x512 took 0.05 s per megapixel-frame on 2 cores, `fast` at 1080x1920 0.02 s:
    # the allowance leaves room for x265, vp9 and a busy host.
    seconds_per_megapixel_frame = 1.0

    codec: Literal["libx264", "libx265", "libvpx-vp9", "h264_nvenc", "hevc_nvenc"] = "libx264"
    crf: int = Field(default=23, ge=0, le=63)  # constant quality (nvenc: cq); lower is better
    preset: str = "medium"  # x264/x265: ultrafast..veryslow; nvenc: p1..p7; ignored by vp9
    pix_fmt: Literal["yuv420p", "yuv422p", "yuv444p", "yuv420p10le"] = "yuv420p"
    max_bitrate: str | None = Bitrate
    bufsize: str | None = Bitrate
    faststart: bool = True  # the moov atom first, so players start before the whole file arrives
    audio: bool = True  # keep the clip's soundtrack (a model that makes one: ltx2); false: a silent file

    @model_serializer(mode="wrap")
    def _audio_when_dropped(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """`audio` is recorded (the metadata's steps) only where it is false: the steps of a preset
        that keeps the sound are written as before there was sound."""
        data: dict[str, Any] = handler(self)
        if self.audio:
            data.pop("audio", None)
        return data

    @model_validator(mode="after")
    def _fits_codec(self) -> Encode:
        allowed = NVENC_PRESETS if self.codec in HARDWARE else X26X_PRESETS
        if self.codec != "libvpx-vp9" and self.preset not in allowed:
            raise ValueError(f"preset {self.preset!r} is not one of {', '.join(allowed)} for {self.codec}")
        if self.crf > 51 and self.codec != "libvpx-vp9":
            raise ValueError(f"crf {self.crf} is above 51, the limit of {self.codec}")
        if self.crf == 0 and self.codec in HARDWARE:
            # NVENC reads cq 0 as "no quality target": the clip would come out at the encoder's whim.
            raise ValueError(f"crf 0 is not a quality for {self.codec} (its cq 0 means none): use 1-51")
        return self

    # The graph splits the soundtrack once per encode that keeps it, and fits it to the clip's length
    # before it is encoded (steps.base.fit_audio).
    audio_filters = ("asplit", "apad", "atrim")

    def encoders(self) -> set[str]:
        return {self.codec}

    def audio_encoders(self) -> set[str]:
        return {self.audio_codec} if self.audio else set()

    @property
    def audio_codec(self) -> str:
        return AUDIO_CODECS[self.extension()]

    def carries_audio(self) -> bool:
        return self.audio

    def extension(self) -> str:
        return ".webm" if self.codec == "libvpx-vp9" else ".mp4"

    def output(self, stream: Any, clip: Clip, target: Path, audio: Any = None) -> Any:
        options: dict[str, Any] = {"vcodec": self.codec, "pix_fmt": self.pix_fmt, "r": clip.fps}
        if self.codec in HARDWARE:
            options.update(preset=self.preset, rc="vbr", cq=self.crf, **{"b:v": 0})
        elif self.codec == "libvpx-vp9":
            options.update(crf=self.crf, deadline="good", **{"b:v": 0, "cpu-used": 4, "row-mt": 1})
        else:
            options.update(crf=self.crf, preset=self.preset)
        if self.codec in ("libx265", "hevc_nvenc"):
            options["tag:v"] = "hvc1"  # what Apple players need to recognise HEVC in MP4
        if self.codec == "libx265":
            options["x265-params"] = "log-level=error"
        if self.max_bitrate:
            options.update(maxrate=self.max_bitrate, bufsize=self.bufsize or self.max_bitrate)
        if self.faststart and self.extension() == ".mp4":
            options["movflags"] = "+faststart"
        options["f"] = "webm" if self.extension() == ".webm" else "mp4"
        if audio is None:
            return stream.output(str(target), **options)
        options.update(acodec=self.audio_codec, **{"b:a": AUDIO_BITRATE})
        return ffmpeg.output(stream, audio, str(target), **options)

    def describe(self, clip: Clip) -> dict[str, Any]:
        return {**super().describe(clip), "codec": self.codec, "pix_fmt": self.pix_fmt, "crf": self.crf}
