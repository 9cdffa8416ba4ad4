"""A job's sidecar checked whole, before anything is spent on it: the one check that the daemon (when
it takes a job), `submit` and the web form (before they write anything) all run, so that what `submit`
accepts the daemon takes. Every problem comes in one message: the sidecar's keys and values, its
backend, the fields that backend honours and its backend_options, the presets and the post-processing
overrides (media/chains.py, whose rules build the chains at the same time: the daemon uses them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from i2v_watcher.backends import available
from i2v_watcher.backends.base import Backend, card_defaults, options_problems
from i2v_watcher.config.loras import model_loras, with_loras
from i2v_watcher.config.quality import levels_for
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError
from i2v_watcher.explain.core import Problem, did_you_mean, show
from i2v_watcher.explain.job import Written, problems_error
from i2v_watcher.job.spec import JobParams, JobSpec, resolve, validate_sidecar
from i2v_watcher.media.chains import Chain, check_chains
from i2v_watcher.run.generate import check_fields

# The backends a job may name, by name: the daemon's resident ones (`submit` and the web form: the
# classes of every registered backend with a model, as another worker of the share may have it loaded).
Backends = Mapping[str, "Backend | type[Backend]"]
# What this ffmpeg cannot run in the job's chains (the daemon's; `submit` cannot know the daemon's ffmpeg).
ChainCheck = Callable[[list[Chain]], list[str]]


@dataclass(frozen=True)
class CheckedSidecar:
    """A sidecar that passed: its fields, and the post-processing chains it asks for (built once, here)."""

    spec: JobSpec
    chains: list[Chain]


def check_sidecar(settings: Settings, raw: object, *, backends: Backends, default_backend: str | None,
                  written: Written | None = None, name: str | None = None,
                  chain_check: ChainCheck | None = None, elsewhere: frozenset[str] = frozenset()
                  ) -> CheckedSidecar:
    """The job's sidecar (`raw`, as YAML read it; `written`: the text of each value) checked whole, or
    one JobError (stage sidecar) with every problem found. `default_backend` None: the backend is chosen
    only when the daemon starts (`auto`), so its fields and options cannot be checked yet. `name` is what
    the messages call the sidecar (its path in the inbox). `elsewhere`: backends that live workers of
    the share offer and `backends` lacks (a plugin's, loaded elsewhere): named, they pass unchecked."""
    spec, problems = validate_sidecar(raw, written, name=name)
    given = set(raw) if isinstance(raw, dict) else set()
    refused = given - spec.model_fields_set  # unknown keys, and the fields whose values were refused
    if spec.backend == "auto":  # the share's auto_backend, whatever this worker's `backend` chose
        spec = spec.model_copy(update={"backend": settings.auto_backend})
    chosen = spec.backend or (None if "backend" in refused else default_backend)
    backend = backends.get(chosen) if chosen is not None else None
    params = resolve(spec, settings.defaults, backend=chosen or "", seed=0,
                     **job_sources(settings, backend, chosen))
    if chosen is not None and backend is None:
        if chosen not in elsewhere:
            problems.append(_not_loaded(chosen, backends))
    elif backend is not None:
        problems += backend_problems(backend, params, written)
    problems = _misplaced(settings, problems, refused - set(JobSpec.model_fields), raw, backend)
    chains = check_chains(settings, params, presets_given="postprocess" not in refused)
    problems += chains.problems
    if not problems and chain_check is not None:
        problems += [Problem(problem, hint="choose presets and overrides that this ffmpeg can run")
                     for problem in chain_check(chains.chains)]
    if problems:
        raise problems_error(list(dict.fromkeys(problems)), f"sidecar {name}" if name else "sidecar")
    return CheckedSidecar(spec, chains.chains)


def job_sources(settings: Settings, backend: Backend | type[Backend] | None,
                name: str | None) -> dict[str, Any]:
    """What a job's fields come from besides its sidecar and [defaults], as resolve() takes them: the
    model card of its backend (`name`, loaded or not) and the quality levels for that backend, with what
    that model's LoRAs set on the levels that use them."""
    levels = with_loras(levels_for(settings.quality, name), model_loras(settings, name or ""))
    return {"model_defaults": card_defaults(backend), "levels": levels}


def _not_loaded(chosen: str, backends: Backends) -> Problem:
    """A backend this daemon did not load: a name no registry knows (a typo) is told apart, with the
    registered name it is closest to."""
    hint = f"resident backends: {', '.join(backends)} (the `backends` setting)"
    registered = available()
    if registered and chosen not in registered:  # a typo: what any worker could load is what matters
        return Problem(f"there is no backend {chosen!r}{did_you_mean(chosen, registered)}",
                       hint=f"registered backends: {', '.join(registered)}")
    return Problem(f"backend {chosen!r} is not loaded by this daemon{did_you_mean(chosen, backends)}",
                   hint=hint)


def backend_problems(backend: Backend | type[Backend], params: JobParams,
                     written: Written | None = None) -> list[Problem]:
    """The fields the sidecar set that this backend cannot honour, and its backend_options' problems."""
    problems = []
    try:
        check_fields(backend, params)
    except JobError as exc:
        problems.append(Problem(exc.message, exc.hint))
    if backend.options_model is not None:
        problems += options_problems(backend.options_model, params.backend_options, written)
    return problems


def _misplaced(settings: Settings, problems: list[Problem], unknown: set[object], raw: object,
               backend: Backend | type[Backend] | None) -> list[Problem]:
    """An unknown key that is one of the backend's options or an overridable step field: say where it
    goes (`motion` belongs under backend_options)."""
    if not unknown or not isinstance(raw, dict):
        return problems
    options = list(backend.options_model.model_fields) if backend and backend.options_model else []
    steps = {field: step for step, fields in settings.postprocess_overridable.items() for field in fields}
    where: dict[str, str] = {}
    for key in sorted(str(k) for k in unknown):
        value = show(raw.get(key))
        if key in options:
            where[key] = (f"it is an option of the {backend.name if backend else ''} backend: write it under "
                          f"backend_options, backend_options: {{{key}: {value}}}")
        elif key in steps:
            where[key] = (f"it is a field of the {steps[key]} step: write it under postprocess_overrides, "
                          f"postprocess_overrides: {{{steps[key]}: {{{key}: {value}}}}}")
    if not where:
        return problems
    moved = []
    for problem in problems:
        key = problem.text.partition(": unknown key")[0]
        moved.append(Problem(f"{key}: unknown key; {where[key]}", problem.hint) if key in where
                     and problem.text.startswith(f"{key}: unknown key") else problem)
    return moved
