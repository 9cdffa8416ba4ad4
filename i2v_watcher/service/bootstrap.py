"""Start-up shared by every service that runs jobs (the folder daemon and the Celery worker) and by
`doctor` and `check-config`: the folders made and checked, ffmpeg found and probed with every preset,
the backends discovered, chosen (`backend = "auto"`) and loaded resident."""

from __future__ import annotations

import time
from pathlib import Path
from typing import NoReturn

import structlog

from i2v_watcher import backends
from i2v_watcher.backends.caption import Captioner
from i2v_watcher.backends.diffusion import DiffusersBackend
from i2v_watcher.backends.speedups import check_swapped_caches
from i2v_watcher.config.gate import check_gate_tables
from i2v_watcher.config.models import check_model_tables, check_swap_models
from i2v_watcher.config.quality import check_quality_tables
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import StartupError
from i2v_watcher.fs.atomic import same_filesystem
from i2v_watcher.fs.perms import write_problem
from i2v_watcher.media.ffmpeg import FFmpeg, find_ffmpeg
from i2v_watcher.media.probes import check_presets
from i2v_watcher.service.systemd import Extend

log = structlog.get_logger("i2v_watcher.service.bootstrap")


def prepare_folders(settings: Settings) -> None:
    if not settings.inbox.is_dir():
        if not settings.create_inbox:
            raise StartupError(
                f"the inbox {settings.inbox} does not exist. If it is a network share, mount it first; "
                "to create a local folder instead, set create_inbox = true")
        settings.inbox.mkdir(parents=True, exist_ok=True)
    for name, path in settings.folders().items():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _refuse(name, path, f"cannot create it: {exc.strerror or exc}")
    _check_writable("work", settings.work)  # this worker's folder is made there, first thing
    if not same_filesystem(settings.inbox, settings.work):
        raise StartupError(
            f"the work folder {settings.work} is not on the same filesystem as the inbox {settings.inbox}: "
            "jobs are claimed by an atomic rename, which needs both on one filesystem (put work on the "
            "inbox's share, e.g. next to it)")


def prepare_scratch(settings: Settings) -> None:
    """The scratch folder (`scratch`), made and tried before any backend loads: a folder this user
    cannot write (root's HOME under `sudo -u`, a path under a file) is a `cannot start`, not a crash."""
    scratch = settings.scratch_dir
    try:
        scratch.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _refuse("scratch", scratch, f"cannot create it: {exc.strerror or exc}", "on a local disk ")
    _check_writable("scratch", scratch, "on a local disk ")


def _check_writable(setting: str, folder: Path, where: str = "") -> None:
    if (problem := write_problem(folder)) is not None:
        _refuse(setting, folder, problem, where)


def _refuse(setting: str, folder: Path, problem: str, where: str = "") -> NoReturn:
    raise StartupError(f"the {setting} folder {folder} (setting `{setting}`) cannot be used: {problem}; "
                       f"set `{setting}` to a folder {where}that this user can write")


def choose_backend(settings: Settings) -> str:
    """`backend = "auto"`: the configured diffusion backend where CUDA and its weights are there, else
    the preview, said loudly. Any explicitly named backend is loaded as configured, or fails start-up."""
    if settings.backend != "auto":
        return settings.backend
    candidate = backends.get(settings.auto_backend)(settings)
    reason = candidate.unavailable()
    if reason is None:
        log.info("backend = auto: using the diffusion backend", backend=candidate.name,
                 model=candidate.model_id)
        return candidate.name
    log.warning("backend = auto: FALLING BACK TO THE PREVIEW BACKEND, no diffusion model will run",
                wanted=candidate.name, reason=reason)
    return "preview"


def discover_backends(settings: Settings) -> None:
    """Import the backends and plugins, then check what the config says about them."""
    backends.discover(settings.plugins)
    check_model_tables(settings, backends.available(), backends.with_models())
    check_swap_models(settings, backends.available(), backends.with_models())
    check_quality_tables(settings, {name: backends.get(name).options_model for name in backends.available()})
    check_gate_tables(settings.quality_gate, backends.available())
    check_swapped_caches(settings.diffusion.cache, settings.swap_backends)


def load_backends(settings: Settings, extend: Extend | None = None
                  ) -> tuple[FFmpeg, str, dict[str, backends.Backend]]:
    """The ffmpeg binary (probed with every preset) and the resident backends, each loaded once; the
    default backend's name (`auto` resolved). `extend` asks systemd for time before each load."""
    binary, origin = find_ffmpeg(settings.ffmpeg_path)
    log.info("ffmpeg found", path=binary.path, origin=origin,
             version=binary.version.removeprefix("ffmpeg version ").split(" Copyright")[0])
    for note in check_presets(settings, binary):
        log.info("ffmpeg hardware encoder", result=note)
    discover_backends(settings)
    default = choose_backend(settings)
    if default in settings.swap_backends:
        raise StartupError(f"backend = auto chose {default}, which is also in swap_backends: list each "
                           "backend either as resident or as swapped")
    resident: dict[str, backends.Backend] = {}
    for name in dict.fromkeys(default if n == "auto" else n for n in settings.resident):
        backend = backends.get(name)(settings)
        if extend is not None:
            extend(settings.load_timeout_s, f"loading the {name} backend ({backend.model_id or 'no model'})")
        started = time.monotonic()
        backend.load()
        log.info("backend loaded", backend=name, model=backend.model_id,
                 seconds=round(time.monotonic() - started, 2))
        if isinstance(backend, DiffusersBackend) and backend.needs_warm_up:
            if extend is not None:
                extend(settings.load_timeout_s, f"compiling the {name} denoiser on a warm-up clip")
            started = time.monotonic()
            backend.warm_up()
            log.info("backend compiled on a warm-up clip", backend=name,
                     seconds=round(time.monotonic() - started, 2))
        resident[name] = backend
    return binary, default, resident


def load_captioner(settings: Settings, extend: Extend | None = None) -> Captioner | None:
    """The image captioner of [caption], loaded once beside the video model; None where it is off."""
    if settings.caption.model is None:
        return None
    captioner = Captioner(settings.caption, settings.diffusion)
    if extend is not None:
        extend(settings.load_timeout_s, f"loading the caption model ({captioner.model_id})")
    started = time.monotonic()
    captioner.load()
    log.info("caption model loaded", model=captioner.model_id, task=captioner.task,
             seconds=round(time.monotonic() - started, 2))
    return captioner
