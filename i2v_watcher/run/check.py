"""The whole job checked at once, before anything is spent on it: the one check that the daemon (when
it takes a job) and `submit` (before it writes anything) both run, so that what `submit` accepts the
daemon takes. Every problem comes in one message: the sidecar's keys and values, its backend, the fields
that backend honours and its backend_options, the presets and the post-processing overrides."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from i2v_watcher.backends.base import Backend, options_problems
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError
from i2v_watcher.explain.core import Problem, Written, did_you_mean, explain_errors, problems_error, show
from i2v_watcher.job.spec import JobParams, JobSpec, resolve, validate_sidecar
from i2v_watcher.media.postprocess import Chain, build_chains, check_overrides
from i2v_watcher.run.generate import check_fields
from i2v_watcher.steps import step_class

# The backends a job may name, by name: the daemon's resident ones (`submit`: their classes).
Backends = Mapping[str, "Backend | type[Backend]"]
# What this ffmpeg cannot run in the job's chains (the daemon's; `submit` cannot know the daemon's ffmpeg).
ChainCheck = Callable[[list[Chain]], list[str]]


def check_job(settings: Settings, raw: object, *, backends: Backends, default_backend: str | None,
              written: Written | None = None, name: str | None = None,
              chain_check: ChainCheck | None = None) -> JobSpec:
    """The job's sidecar (`raw`, as YAML read it; `written`: the text of each value) checked whole, or
    one JobError (stage sidecar) with every problem found. `default_backend` None: the backend is chosen
    only when the daemon starts (`auto`), so its fields and options cannot be checked yet. `name` is what
    the messages call the sidecar (its path in the inbox)."""
    spec, problems = validate_sidecar(raw, written, name=name)
    given = set(raw) if isinstance(raw, dict) else set()
    refused = given - spec.model_fields_set  # unknown keys, and the fields whose values were refused
    chosen = spec.backend or (None if "backend" in refused else default_backend)
    params = resolve(spec, settings.defaults, backend=chosen or "", seed=0)
    backend: Backend | type[Backend] | None = None
    if chosen is not None and chosen not in backends:
        problems.append(Problem(f"backend {chosen!r} is not loaded by this daemon"
                                f"{did_you_mean(chosen, backends)}",
                                hint=f"resident backends: {', '.join(backends)} (the `backends` setting)"))
    elif chosen is not None:
        backend = backends[chosen]
        problems += backend_problems(backend, params, written)
    problems = _misplaced(settings, problems, refused - set(JobSpec.model_fields), raw, backend)
    problems += preset_problems(settings, params, presets_given="postprocess" not in refused)
    if not problems and chain_check is not None:
        problems += [Problem(problem, hint="choose presets and overrides that this ffmpeg can run")
                     for problem in chain_check(build_chains(settings, params))]
    if problems:
        raise problems_error(list(dict.fromkeys(problems)), f"sidecar {name}" if name else "sidecar")
    return spec


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


def preset_problems(settings: Settings, params: JobParams, *, presets_given: bool = True) -> list[Problem]:
    """Unknown presets, and every override that is not allowed, not valid for its step, or changes no
    step of the chosen presets; then, when none is found, the daemon's own build of the chains."""
    presets = settings.presets
    problems = [Problem(f"unknown post-processing preset {name!r}{did_you_mean(name, presets)}",
                        hint=f"presets: {', '.join(presets)}")
                for name in params.postprocess if name not in presets]
    overrides, refused = _allowed_overrides(settings, params.postprocess_overrides)
    problems += refused
    chosen = [name for name in params.postprocess if name in presets]
    used: set[str] = set()
    for name in chosen:
        for step in presets[name].chain():
            used.add(step.name)
            if step.name in overrides:
                problems += _step_problems(step.name, {**step.model_dump(), **overrides[step.name]})
    if presets_given and len(chosen) == len(params.postprocess):
        problems += [Problem(f"postprocess_overrides.{step}: none of the chosen presets "
                             f"({', '.join(chosen)}) has a {step} step",
                             hint="choose a preset with that step, or remove the override")
                     for step in overrides.keys() - used]
    if not problems:  # whatever else the daemon's build of the chains refuses
        try:
            build_chains(settings, params)
        except JobError as exc:
            problems.append(Problem(exc.message, exc.hint))
    return list(dict.fromkeys(problems))


def _allowed_overrides(settings: Settings, overrides: dict[str, Any]
                       ) -> tuple[dict[str, dict[str, Any]], list[Problem]]:
    """The overrides the allow-list and check_overrides let through, and a problem for each other one."""
    allow = settings.postprocess_overridable
    hint = "overridable: " + "; ".join(f"{step}: {', '.join(fields)}" for step, fields in allow.items())
    allowed: dict[str, dict[str, Any]] = {}
    problems: list[Problem] = []
    for step, fields in overrides.items():
        if step not in allow:
            problems.append(Problem(f"postprocess_overrides: step {step!r} cannot be overridden"
                                    f"{did_you_mean(step, allow)}", hint))
        elif not isinstance(fields, dict):
            problems.append(Problem(f"postprocess_overrides.{step} must be a mapping of field: value "
                                    f"(got {show(fields)})"))
        else:
            for field, value in fields.items():
                if field not in allow[step]:
                    problems.append(Problem(f"postprocess_overrides: {step}.{field} cannot be overridden"
                                            f"{did_you_mean(field, allow[step])}", hint))
                    continue
                try:
                    check_overrides(settings, {step: {field: value}})  # plain values, no paths or filters
                except JobError as exc:
                    problems.append(Problem(exc.message, exc.hint))
                    continue
                allowed.setdefault(step, {})[field] = value
    return allowed, problems


def _step_problems(step: str, values: dict[str, Any]) -> list[Problem]:
    """A step with the overrides applied, validated as postprocess.apply_override does."""
    model = step_class(step)
    try:
        model.model_validate(values, strict=True)
    except ValidationError as exc:
        return explain_errors(exc, model=model, at=("postprocess_overrides", step))
    except ValueError as exc:
        return [Problem(f"postprocess_overrides.{step}: {exc}")]
    return []


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
