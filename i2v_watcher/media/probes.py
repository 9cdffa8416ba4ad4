"""Start-up probes: every preset the config uses must find its filters and encoders in this ffmpeg, and a
hardware encoder must pass a one-frame trial encode, before the daemon takes a job."""

from __future__ import annotations

import subprocess

from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import StartupError
from i2v_watcher.media.chains import Chain
from i2v_watcher.media.ffmpeg import FFmpeg, child_env
from i2v_watcher.steps.encode import HARDWARE
from i2v_watcher.steps.presets import SHIPPED_PRESETS


def check_presets(settings: Settings, binary: FFmpeg) -> list[str]:
    """At start-up, not hours later in a job: every preset the config uses (its own [presets], and those
    defaults.postprocess names) must find its filters and encoders, and a hardware encoder must pass a
    one-frame trial encode (a static ffmpeg lists NVENC without a GPU). Shipped presets the config does
    not use cannot stop the daemon: what this ffmpeg lacks for them is a note, and their hardware
    encoders are tried when a job asks for one (it then fails at its sidecar stage, saying why).
    Returns notes for the log; raises StartupError listing every problem."""
    tried: dict[str, str | None] = {}
    used = presets_in_use(settings)
    problems = chain_problems([(name, settings.presets[name].chain()) for name in used], binary, tried)
    notes = [f"{encoder}: trial encode ok" for encoder, error in tried.items() if error is None]
    for name, preset in settings.presets.items():
        if name not in used:
            notes += [f"{problem} (a shipped preset this config does not use: only a job asking for it "
                      "fails)" for problem in chain_problems([(name, preset.chain())], binary, None)]
    if problems:
        raise StartupError("post-processing presets cannot run with this ffmpeg: " + "; ".join(problems))
    return notes


def presets_in_use(settings: Settings) -> list[str]:
    """The presets start-up vouches for: those the config defines or redefines, and those
    defaults.postprocess names. The other shipped presets (the NVENC ones, say) are offered, not used."""
    return [name for name, preset in settings.presets.items()
            if name in settings.defaults.presets or SHIPPED_PRESETS.get(name) != preset]


def chain_problems(chains: list[Chain], binary: FFmpeg, tried: dict[str, str | None] | None) -> list[str]:
    """What in these chains this ffmpeg cannot run: missing filters (the picture's, and a soundtrack's:
    any clip may come with one) and encoders, and hardware encoders whose trial encode (remembered in
    `tried`; None: not tried) failed."""
    problems = []
    for name, steps in chains:
        for step in steps:
            for missing in sorted(set(step.filters + step.audio_filters) - binary.filters):
                problems.append(f"preset {name!r}: ffmpeg has no {missing!r} filter (step {step.name})")
            for encoder in sorted(step.encoders() | step.audio_encoders()):
                if encoder not in binary.encoders:
                    problems.append(f"preset {name!r}: ffmpeg has no {encoder!r} encoder")
                elif encoder in HARDWARE and tried is not None:
                    if encoder not in tried:
                        tried[encoder] = trial_encode(binary, encoder)
                    if tried[encoder]:
                        problems.append(f"preset {name!r}: the {encoder} encoder cannot run here "
                                        f"({tried[encoder]}); it needs an NVIDIA GPU and driver visible "
                                        "to the service")
    return problems


def trial_encode(binary: FFmpeg, encoder: str) -> str | None:
    """Encode one black frame with `encoder`; None when it works, else the reason."""
    command = [binary.path, "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi", "-i",
               "color=c=black:s=256x256:d=0.04", "-frames:v", "1", "-c:v", encoder, "-f", "null", "-"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=child_env())
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if result.returncode == 0:
        return None
    return _first_reason(result.stderr, encoder) or f"exit code {result.returncode}"


def _first_reason(stderr: str, encoder: str) -> str:
    """The encoder's own first complaint ("Cannot load libcuda.so.1", "No capable devices found"),
    not ffmpeg's generic lines that follow it; else the last lines."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    own = [line.split("] ", 1)[-1] for line in lines if line.startswith(f"[{encoder} @")]
    return own[0] if own else " | ".join(lines[-3:])
