"""`submit`: drop an image and its sidecar into the inbox safely, so the daemon never sees a half-written
job and two submits never share a name: the job is validated first, its name reserved, then each file
appears complete under a hidden temporary name and one rename, sidecar first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from i2v_watcher import backends
from i2v_watcher.backends.base import MAX_ASPECT, Backend, check_aspect
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError, StartupError
from i2v_watcher.explain.job import Written, problems_heading
from i2v_watcher.fs.reservations import release_name, reserve_name
from i2v_watcher.inbox.drop import clash_suffixes, new_owner, write_job
from i2v_watcher.inbox.watch import IMAGE_SUFFIXES
from i2v_watcher.job.sidecar_yaml import load_yaml_texts
from i2v_watcher.job.spec import JobParams, check_output_name, resolve
from i2v_watcher.media.cost import check_cost
from i2v_watcher.media.images import load_image
from i2v_watcher.run.check import CheckedSidecar, check_sidecar, job_sources
from i2v_watcher.run.generate import memory_budget_bytes, plan_job
from i2v_watcher.steps import Clip
from i2v_watcher.work.routing import offered
from i2v_watcher.work.survey import survey


class Sidecar(dict[str, Any]):
    """A sidecar made of `--prompt` and `--set` values, with the text each value was written as (so a
    `--set prompt=yes` that YAML reads as true is told to quote it)."""

    written: Written


def build_sidecar(prompt: str | None, assignments: list[str]) -> dict[str, Any]:
    """`--set key=value` items, each value read as YAML with the sidecar's rules (a list, a mapping, a
    number...); checked whole by check_submission. A value that is not valid YAML says which --set it is."""
    values = Sidecar()
    written: dict[tuple[str, ...], str] = {}
    if prompt is not None:
        values["prompt"] = prompt
    problems = []
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise StartupError(f"--set expects key=value, got {item!r}")
        key = key.strip()
        if not raw.strip():
            values[key] = ""
            continue
        try:
            values[key], texts = load_yaml_texts(raw.encode(), f"--set {key}={raw}")
        except JobError as exc:
            problems.append(f"{exc.message} ({exc.hint})" if exc.hint else exc.message)
            continue
        written.update({(key, *path): text for path, text in texts.items()})
    if problems:
        raise StartupError("; ".join(problems))
    values.written = written
    return values


def check_submission(settings: Settings, sidecar: dict[str, Any], image: Path | None = None) -> None:
    """Refuse now, with every problem at once, what the daemon would refuse after claiming the job: the
    same check of the sidecar it runs (run.check.check_sidecar) against the backends a worker of the
    share may have loaded (declared on their classes: no model is loaded for this), and the image as the
    daemon reads it. What only the daemon's host can tell (its ffmpeg's encoders; its memory, unless
    memory_budget_mb says; whether it loaded the backend at all) is checked when it takes the job."""
    resident = _backends(settings)
    default = None if settings.backend == "auto" else settings.backend
    problems: list[str] = []
    hint = ""
    checked: CheckedSidecar | None = None
    try:
        checked = check_sidecar(settings, sidecar, backends=resident, default_backend=default,
                                written=getattr(sidecar, "written", None),
                                elsewhere=frozenset(live_offers(settings) or ()))
    except JobError as exc:
        problems, hint = exc.problems, exc.hint
    if image is not None:
        chosen = sidecar.get("backend", default)
        backend = resident.get(chosen) if isinstance(chosen, str) else None
        problems += _image_problems(settings, image, backend, checked)
    if problems:  # a line each, then what would fix them
        lines = [problems_heading("job", len(problems)) + ":", *(f"  - {p}" for p in problems)]
        raise StartupError("\n".join(lines + ([f"  hint: {hint}"] if hint else [])))


def _backends(settings: Settings) -> dict[str, Backend | type[Backend]]:
    """The backends a job may name: every registered backend with a model (with routing, another worker
    of the share may have loaded one that this machine's config does not list), and the ones this config
    loads or swaps in (for `auto` both of its outcomes)."""
    backends.discover(settings.plugins)
    names = [name for name in [*settings.resident, *settings.swap_backends] if name != "auto"]
    if "auto" in settings.resident:  # resolved when the daemon starts: the diffusion model or the preview
        names += [settings.auto_backend, "preview"]
    return {name: backends.get(name) for name in dict.fromkeys([*names, *backends.with_models()])}


def live_offers(settings: Settings) -> set[str] | None:
    """The backends the share's live workers offer now (their heartbeats); None: work/ cannot be read."""
    try:
        return offered(survey(settings)) if settings.work.is_dir() else set()  # none: no worker ever ran
    except OSError:
        return None


def unserved(settings: Settings, sidecar: dict[str, Any]) -> str | None:
    """Why the job may wait (a warning, not a refusal): its sidecar names a backend that no live worker
    of the share offers now (their heartbeats, as the daemons' routing reads them). None: a live worker
    has it, the sidecar names none (any worker takes it), or work/ is there but cannot be read."""
    chosen = sidecar.get("backend")
    if chosen == "auto":
        chosen = settings.auto_backend
    live = live_offers(settings)
    if not isinstance(chosen, str) or not chosen or live is None or chosen in live:
        return None
    waits = (f"fails after unroutable_timeout_s ({settings.unroutable_timeout_s:g} s)"
             if settings.unroutable_timeout_s else "waits as long as it takes (unroutable_timeout_s = 0)")
    others = f" (live workers offer: {', '.join(sorted(live))})" if live else " (no worker is live now)"
    return (f"no live worker offers the backend {chosen!r}{others}: the job waits in the inbox for one "
            f"that loads it, and {waits}")


def _image_problems(settings: Settings, image: Path, backend: Backend | type[Backend] | None,
                    checked: CheckedSidecar | None) -> list[str]:
    """The image as the daemon will load it: readable, within the size limits, a usable shape, (where
    memory_budget_mb fixes the budget on every host) frames that fit in memory, and outputs within the
    post-processing bounds (media/cost.py)."""
    try:
        with load_image(image, max_pixels=settings.max_image_pixels,
                        max_bytes=settings.max_image_bytes) as picture:
            size = picture.size
        check_aspect(*size, backend.max_aspect if backend is not None else MAX_ASPECT)
        if backend is not None and checked is not None:
            instance = backend if isinstance(backend, Backend) else backend(settings)
            params = resolve(checked.spec, settings.defaults, backend=instance.name, seed=0,
                             **job_sources(settings, instance, instance.name))
            if _can_plan(instance, size, params):
                if settings.memory_budget_mb is not None:
                    plan_job(instance, size, params, memory_budget_bytes(settings.memory_budget_mb))
                planned = instance.planned(*size, params)
                source = Clip(planned.width, planned.height, planned.frames, params.fps)
                check_cost(settings, checked.chains, source)
    except JobError as exc:
        return [f"{image}: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")]
    return []


def _can_plan(backend: Backend, size: tuple[int, int], params: JobParams) -> bool:
    """Whether the backend can plan the job without its model (a diffusion model may need it loaded)."""
    try:
        backend.planned(*size, params)
    except Exception:
        return False
    return True


def submit(settings: Settings, image: Path, sidecar: dict[str, Any], name: str | None = None,
           warn: Callable[[str], None] | None = None) -> Path:
    """Put one job into the inbox under a free name (name-1, name-2… when taken); its image's path.
    The image is the submitter's own file: a symbolic link to it is followed (the no-follow rule
    guards the inbox, where others drop files), while the job keeps the name and suffix it was given.
    `warn` hears what does not stop the job (no live worker offers its backend yet)."""
    stem = _check_request(settings, image, name)
    source = image.resolve()
    check_submission(settings, sidecar, source)
    waits = unserved(settings, sidecar)
    if waits is not None and warn is not None:
        warn(waits)
    owner = new_owner("submit")
    stem = reserve_name(settings.inbox, stem, clash_suffixes(image.suffix), owner)
    try:
        return write_job(settings.inbox, stem, source, image.suffix, sidecar)
    finally:
        release_name(settings.inbox, stem, owner)


def _check_request(settings: Settings, image: Path, name: str | None) -> str:
    if image.suffix.lower() not in IMAGE_SUFFIXES:
        raise StartupError(f"{image} is not a {', '.join(IMAGE_SUFFIXES)} image")
    if not image.is_file():
        raise StartupError(f"{image} is not a file")
    if not settings.inbox.is_dir():
        raise StartupError(f"the inbox {settings.inbox} does not exist (is the share mounted?)")
    try:
        return check_output_name(name or image.stem)
    except ValueError as exc:
        raise StartupError(f"job name {name or image.stem!r}: {exc}") from exc
