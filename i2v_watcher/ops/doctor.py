"""`i2v-watcher doctor`: what would stop the service (or quietly hurt it), found before it starts, each
finding with what to do about it. Findings are plain data, so a dashboard can show the same list.

The checks reuse the daemon's own logic (config loading, ffmpeg discovery and preset probing, the
backends' model lookup, the watch-mode choice), so doctor and start-up cannot disagree."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from i2v_watcher import backends
from i2v_watcher.backends.capacity import DIFFUSION_EXTRA
from i2v_watcher.config.errors import config_warnings, doctor_findings
from i2v_watcher.config.settings import load_settings
from i2v_watcher.errors import StartupError
from i2v_watcher.fs.perms import write_problem
from i2v_watcher.ops.findings import INSTALL_EXTRA, RANK, Context, Finding, Status
from i2v_watcher.ops.model_check import check_caption, check_model

EXIT_OK, EXIT_BLOCKING, EXIT_UNREADABLE = 0, 1, 2
LABELS = {"ok": "ok", "info": "info", "warning": "warn", "error": "ERROR", "skipped": "skip"}
NEEDS_CONFIG = ("backend", "model", "presets", "folders", "filesystem", "scratch", "watch")
NO_GPU = ('install the NVIDIA driver and a CUDA build of torch, or set [diffusion] device = "cpu" '
          '(very slow) or backend = "preview"')
NO_GPU_NEEDED = ("nothing to do for this config (a diffusion backend on a GPU needs the NVIDIA driver and "
                 "a CUDA build of torch)")
FALLBACK = ('fix what the gpu, diffusion-extra and model findings say, or set backend = "preview" to make '
            "the preview the intended backend")
PRESET_FIX = ("change or remove [presets.{}], or set ffmpeg_path to an ffmpeg that has it (a hardware "
              "encoder also needs its GPU and driver visible to the service)")
OFFERED_FIX = ("nothing, unless jobs should use them: the config does not, so the service starts, and a job "
               "that asks for one fails at its sidecar stage, saying why")
WRITABLE = "let the service's user write there (chown, chmod; a read-only mount: remount it read-write)"
SYSTEMD_FIX = ("pip install 'i2v-watcher[systemd]', after apt-get install -y libsystemd-dev pkg-config "
               "python3-dev")


def check_backends(ctx: Context) -> list[Finding]:
    from i2v_watcher.service.bootstrap import discover_backends

    assert ctx.settings is not None
    settings, found = ctx.settings, []
    try:
        discover_backends(settings)
    except StartupError as exc:
        found.append(Finding("backend", "error", str(exc), "correct `plugins` or the [models.*] tables"))
    for name in [*settings.resident, *settings.swap_backends]:  # a swapped model is checked as a kept one
        auto = name == "auto"
        try:
            cls = backends.get(settings.auto_backend if auto else name)
        except StartupError as exc:
            setting = "auto_backend" if auto else "backend and backends"
            found.append(Finding("backend", "error", str(exc), f"name registered backends in {setting}"))
            continue
        if cls.uses_model:
            wanted: Status = "warning" if auto else "error"
            ctx.diffusion[cls.name] = max(ctx.diffusion.get(cls.name, "info"), wanted, key=RANK.__getitem__)
        name = cls.name
        backend = cls(settings)
        reason = backend.unavailable() if auto else None  # the very test `auto` makes at start-up
        if reason is None:
            what = f"backend = auto: {name} would run" if auto else f"backend {name}"
            found.append(Finding("backend", "ok", f"{what}: {backend.model_id}", data={"backend": name}))
        else:
            found.append(Finding("backend", "warning", "backend = auto would FALL BACK to the preview (no "
                                 f"model runs): {reason}", FALLBACK, {"backend": "preview", "wanted": name}))
    return found


def check_extra(ctx: Context) -> list[Finding]:
    versions, problems = {}, {}
    for name in DIFFUSION_EXTRA:
        if importlib.util.find_spec(name) is None:
            problems[name] = "not installed"
            continue
        try:  # importing, not only finding: a broken or half-upgraded package is found but fails here
            versions[name] = str(getattr(importlib.import_module(name), "__version__", "?"))
        except Exception as exc:
            problems[name] = f"cannot be imported ({type(exc).__name__}: {exc})"
    if problems:
        needed = f"needed by {', '.join(ctx.diffusion)}" if ctx.diffusion else "no backend here needs it"
        listed = "; ".join(f"{k} {v}" for k, v in problems.items())
        return [Finding("diffusion-extra", ctx.level(), f"the diffusion extra is incomplete ({needed}): "
                        f"{listed}", INSTALL_EXTRA, {"missing": problems, "versions": versions})]
    found = [Finding("diffusion-extra", "ok", ", ".join(f"{k} {v}" for k, v in versions.items()),
                     data={"versions": versions})]
    import diffusers

    for name, level in ctx.diffusion.items():
        pipeline = getattr(backends.get(name), "pipeline_class", "")
        try:  # diffusers drops deprecated pipelines (I2VGen-XL's is one): only the import tells
            if pipeline:
                getattr(diffusers, pipeline)
        except Exception as exc:
            found.append(Finding("diffusion-extra", level, f"diffusers {versions['diffusers']} has no usable "
                                 f"{pipeline} for {name}: {exc}", "install a diffusers version the diffusion "
                                 "extra allows: " + INSTALL_EXTRA))
    return found


def check_gpu(ctx: Context) -> list[Finding]:
    level = ctx.level(cuda=True)
    device = ctx.settings.diffusion.device if ctx.settings else "cuda"
    if importlib.util.find_spec("torch") is None:
        return [Finding("gpu", level, "torch is not installed, so no GPU can be used", INSTALL_EXTRA)]
    try:
        import torch
    except ImportError as exc:  # found but broken (a half-finished upgrade): check_extra says more
        return [Finding("gpu", level, f"torch fails to import ({exc}), so no GPU can be used", INSTALL_EXTRA)]

    if not torch.cuda.is_available():
        fix = NO_GPU if level != "info" else NO_GPU_NEEDED
        return [Finding("gpu", level, f"torch {torch.__version__} sees no CUDA GPU (configured device: "
                        f"{device})", fix, {"gpus": []})]
    from i2v_watcher.backends import get
    from i2v_watcher.backends.capacity import auto_short_side
    from i2v_watcher.backends.card import WEBUI_CARD

    gpus: list[dict[str, Any]] = []
    runs = next(iter(ctx.diffusion), "a diffusion backend")
    card = (get(runs).card if runs in ctx.diffusion else None) or WEBUI_CARD
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        side, _ = auto_short_side(f"cuda:{index}", card)  # the daemon's own rule for that model
        gpus.append({"device": f"cuda:{index}", "name": torch.cuda.get_device_name(index),
                     "free_gib": round(free / 2**30, 1), "total_gib": round(total / 2**30, 1),
                     "auto_resolution": f"{side}p"})
    lines = [f"{g['device']} {g['name']}: {g['free_gib']} of {g['total_gib']} GiB free, {runs} at "
             f"{g['auto_resolution']} for resolution = auto" for g in gpus]
    found = [Finding("gpu", "ok", "; ".join(lines), data={"gpus": gpus})]
    chosen = int(device.partition(":")[2] or 0) if device.startswith("cuda") else -1
    if chosen >= len(gpus):
        found.append(Finding("gpu", level, f"[diffusion] device = {device!r}, but there are {len(gpus)} GPUs",
                             "set [diffusion] device to one of " + ", ".join(g["device"] for g in gpus)))
    elif chosen >= 0 and gpus[chosen]["free_gib"] < 0.8 * gpus[chosen]["total_gib"]:
        used = round(gpus[chosen]["total_gib"] - gpus[chosen]["free_gib"], 1)
        found.append(Finding("gpu", "warning", f"{used} GiB of {device} are in use by other processes",
                             "stop what holds that memory (`nvidia-smi` lists it), or expect jobs to go "
                             "down the OOM ladder", {"device": device}))
    return found


def check_ffmpeg(ctx: Context) -> list[Finding]:
    from i2v_watcher.media.ffmpeg import HINT, find_ffmpeg
    from i2v_watcher.media.probes import chain_problems, presets_in_use

    settings = ctx.settings
    try:
        binary, origin = find_ffmpeg(settings.ffmpeg_path if settings else None)
    except StartupError as exc:
        return [Finding("ffmpeg", "error", str(exc).removesuffix(f"; {HINT}"), HINT),
                Finding("presets", "skipped", "not checked: no usable ffmpeg")]
    found = [Finding("ffmpeg", "ok", f"{binary.path} (from {origin}): {binary.version}",
                     data={"path": binary.path, "origin": origin, "version": binary.version})]
    if settings is None:
        return [*found, Finding("presets", "skipped", "not checked without a valid config")]
    tried: dict[str, str | None] = {}
    used = presets_in_use(settings)
    offered: list[str] = []  # shipped presets this config does not use: start-up lets them be
    reasons: dict[str, None] = {}
    for name, preset in settings.presets.items():
        problems = chain_problems([(name, preset.chain())], binary, tried)
        if name in used:
            found += [Finding("presets", "error", problem, PRESET_FIX.format(name), {"preset": name})
                      for problem in problems]
        elif problems:
            offered.append(name)
            reasons.update(dict.fromkeys(problem.split(": ", 1)[-1] for problem in problems))
    if offered:
        found.append(Finding(
            "presets", "info", f"shipped preset(s) {', '.join(offered)} cannot run here: "
            f"{'; '.join(reasons)}", OFFERED_FIX, {"presets": offered}))
    if not any(f.status == "error" for f in found):
        usable = len(settings.presets) - len(offered)
        which = f"the {usable} other presets" if offered else f"all {usable} presets"
        found.append(Finding("presets", "ok", f"ffmpeg has what {which} need",
                             data={"hardware_encoders": {k: v or "ok" for k, v in tried.items()}}))
    return found


def _existing(path: Path) -> Path:
    """The path, or its nearest existing ancestor: where a folder the daemon creates will be."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_folders(ctx: Context) -> list[Finding]:
    assert ctx.settings is not None
    settings, found = ctx.settings, []
    for name, path in settings.folders().items():
        data = {"folder": name, "path": str(path), "uid": os.geteuid()}
        if path.exists() and not path.is_dir():
            found.append(Finding("folders", "error", f"{name} {path} exists but is not a folder",
                                 f"remove or rename that file, or point `{name}` elsewhere", data))
        elif not path.exists() and name == "inbox" and not settings.create_inbox:
            found.append(Finding("folders", "error", f"the inbox {path} does not exist", "mount the share "
                                 "first; or create the folder; or set create_inbox = true", data))
        elif (problem := write_problem(_existing(path))) is not None:
            where = "" if path.exists() else f" (to be created in {_existing(path)})"
            found.append(Finding("folders", "error", f"{name} {path}{where}: {problem}", WRITABLE, data))
        else:
            note = "writable" if path.exists() else "will be created"
            found.append(Finding("folders", "ok", f"{name} {path}: {note}", data=data))
    inbox, work = _existing(settings.inbox), _existing(settings.work)
    if os.stat(inbox).st_dev != os.stat(work).st_dev:
        found.append(Finding("filesystem", "error", f"work {settings.work} is not on the filesystem of the "
                             f"inbox {settings.inbox}: jobs are claimed by an atomic rename, which needs one "
                             "filesystem", "put work on the inbox's share, e.g. next to the inbox"))
    else:
        found.append(Finding("filesystem", "ok", "work and the inbox are on one filesystem"))
    return [*found, _check_scratch(settings.scratch_dir)]


def _check_scratch(scratch: Path) -> Finding:
    """The resume copies of generated frames belong on a local disk: every job writes one."""
    from i2v_watcher.fs.mounts import filesystem_type, is_network_fs

    data = {"folder": "scratch", "path": str(scratch)}
    if (problem := write_problem(_existing(scratch))) is not None:
        return Finding("scratch", "error", f"scratch {scratch}: {problem}", WRITABLE, data)
    fstype = filesystem_type(_existing(scratch)) or "unknown"
    if is_network_fs(fstype):
        return Finding("scratch", "warning", f"scratch {scratch} is on {fstype}: every job's frames would "
                       "cross the network", "set `scratch` to a folder on a local disk", data)
    return Finding("scratch", "ok", f"scratch {scratch} ({fstype}): writable", data=data)


def check_watch(ctx: Context) -> list[Finding]:
    from i2v_watcher.fs.mounts import filesystem_type, is_network_fs
    from i2v_watcher.inbox.watch import Watcher

    assert ctx.settings is not None
    mode = Watcher(ctx.settings).mode  # the daemon's own choice; constructing it starts nothing
    fstype = filesystem_type(ctx.settings.inbox) or "unknown"
    data = {"mode": mode, "filesystem": fstype}
    if mode == "inotify" and is_network_fs(fstype):
        return [Finding("watch", "warning", f'watch_mode = "inotify" on a {fstype} inbox: inotify does not '
                        "see what other hosts write into a share", 'set watch_mode = "auto"', data)]
    return [Finding("watch", "ok", f"the inbox is on {fstype}: {mode}", data=data)]


def check_systemd(ctx: Context) -> list[Finding]:
    under = [name for name in ("NOTIFY_SOCKET", "INVOCATION_ID") if os.environ.get(name)]
    data = {"under_systemd": bool(under)}
    try:
        import systemd.daemon  # noqa: F401
    except ImportError as exc:
        where = f"under systemd ({', '.join(under)} set)" if under else "not under systemd"
        return [Finding("systemd", "warning" if under else "info", f"{where}; systemd-python is missing "
                        f"({exc}): no readiness or watchdog notifications", SYSTEMD_FIX, data)]
    return [Finding("systemd", "ok", "systemd-python is installed", data=data)]


CHECKS: list[tuple[str, Callable[[Context], list[Finding]]]] = [
    ("backend", check_backends), ("diffusion-extra", check_extra), ("gpu", check_gpu), ("model", check_model),
    ("caption", check_caption), ("ffmpeg", check_ffmpeg), ("folders", check_folders), ("watch", check_watch),
    ("systemd", check_systemd)]


def diagnose(config: Path) -> tuple[list[Finding], int]:
    """Every finding, and the exit code: 2 when the config file cannot be read, 1 on any error."""
    try:
        settings = load_settings(config)
        ctx = Context(settings)
        found = [Finding("config", "ok", f"{config} is valid")]
        found += [Finding("config", "warning", warning, fix)
                  for warning, fix in config_warnings(settings, config)]
    except StartupError as exc:  # one finding per problem: the setting, its value, where it was set
        ctx = Context(None)
        found = [Finding("config", "error", message, fix, data)
                 for message, fix, data in doctor_findings(exc, config)]
        found += [Finding(name, "skipped", "not checked without a valid config") for name in NEEDS_CONFIG
                  if name != "presets"]  # the ffmpeg check, which still runs, says so for the presets
    for name, check in CHECKS:
        if ctx.settings is None and name in NEEDS_CONFIG:
            continue
        try:
            found += check(ctx)
        except Exception as exc:  # doctor reports; a check that breaks is a finding, never a traceback
            found.append(Finding(name, "error", f"the check itself failed: {type(exc).__name__}: {exc}",
                                 "report this, with the output of `i2v-watcher doctor --json`"))
    blocking = EXIT_BLOCKING if any(f.status == "error" for f in found) else EXIT_OK
    return found, EXIT_UNREADABLE if found[0].data.get("readable") is False else blocking


def render(findings: list[Finding], as_json: bool) -> str:
    if as_json:
        return json.dumps({"ok": not any(f.status == "error" for f in findings),
                           "findings": [f.as_dict() for f in findings]}, indent=2)
    lines = [f"{LABELS[f.status]:<5} {f.check:<15} {f.message}" + (f"\n{'':21} fix: {f.fix}" if f.fix else "")
             for f in findings]
    errors = sum(f.status == "error" for f in findings)
    warnings = sum(f.status == "warning" for f in findings)
    verdict = "the service would not start" if errors else "nothing blocks the service"
    lines.append(f"{errors} error(s), {warnings} warning(s): {verdict}")
    return "\n".join(lines)
