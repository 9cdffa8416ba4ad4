"""A job's post-processing chains: the presets it asked for, with its allow-listed overrides applied.

This is the one rule set for presets and overrides. It collects every problem (an unknown preset, an
override not on the allow-list, not a plain value, carrying a path or ffmpeg syntax, not valid for its
step, or changing no step of the chosen presets) and builds the chains in the same pass, so the job
check that `submit`, the web form and the daemon run (run/check.py) builds them once and hands them on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from i2v_watcher.config.settings import Settings
from i2v_watcher.explain.core import Problem, did_you_mean, show
from i2v_watcher.explain.job import explain_errors, problems_error
from i2v_watcher.job.spec import JobParams
from i2v_watcher.steps import Step, step_class

FORBIDDEN = "/\\:;,=[]'\""  # path and ffmpeg filter-graph syntax: never in an override's value
Chain = tuple[str, list[Step]]  # a preset's name and its steps, overrides applied


@dataclass(frozen=True)
class CheckedChains:
    """The chains a job asked for and every problem with them; the chains are usable only without."""

    chains: list[Chain]
    problems: list[Problem] = field(default_factory=list)


def check_chains(settings: Settings, params: JobParams, *, presets_given: bool = True) -> CheckedChains:
    """The presets a job asked for, built with its overrides, and every problem found on the way.
    `presets_given` False: the sidecar's own presets were refused (the defaults stand in), so an
    override that changes none of them is not blamed on it."""
    presets = settings.presets
    problems = [Problem(f"unknown post-processing preset {name!r}{did_you_mean(name, presets)}",
                        hint=f"presets: {', '.join(presets)}")
                for name in params.postprocess if name not in presets]
    overrides, refused = _allowed_overrides(settings, params.postprocess_overrides)
    problems += refused
    chains: list[Chain] = []
    for name in (name for name in params.postprocess if name in presets):
        steps: list[Step] = []
        for step in presets[name].chain():
            result = _overridden(step, overrides.get(step.name, {}))
            if isinstance(result, list):  # refused: the problems say why; the chain is not used
                problems += result
            steps.append(step if isinstance(result, list) else result)
        chains.append((name, steps))
    used = {step.name for _, steps in chains for step in steps}
    if presets_given and len(chains) == len(params.postprocess):
        # An override that changes nothing is a mistake the user wants to hear about now.
        problems += [Problem(f"postprocess_overrides.{step}: none of the chosen presets "
                             f"({', '.join(params.postprocess)}) has a {step} step",
                             hint="choose a preset with that step, or remove the override")
                     for step in overrides.keys() - used]
    return CheckedChains(chains, list(dict.fromkeys(problems)))


def build_chains(settings: Settings, params: JobParams) -> list[Chain]:
    """The chains of a job whose sidecar is not otherwise checked (a benchmark, a test): one JobError
    (stage sidecar) with every problem, as the job check reports them."""
    checked = check_chains(settings, params)
    if checked.problems:
        raise problems_error(checked.problems, "sidecar")
    return checked.chains


def _allowed_overrides(settings: Settings, overrides: dict[str, Any]
                       ) -> tuple[dict[str, dict[str, Any]], list[Problem]]:
    """Only allow-listed steps and fields, plain scalar values, never a path or an ffmpeg option: the
    overrides let through, and a problem for each other one."""
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
            for name, value in fields.items():
                if name not in allow[step]:
                    problems.append(Problem(f"postprocess_overrides: {step}.{name} cannot be overridden"
                                            f"{did_you_mean(name, allow[step])}", hint))
                elif (refusal := _refused_value(f"{step}.{name}", value)) is not None:
                    problems.append(refusal)
                else:
                    allowed.setdefault(step, {})[name] = value
    return allowed, problems


def _refused_value(where: str, value: object) -> Problem | None:
    """A plain scalar, and no text that could smuggle a path, a filter or an ffmpeg option in."""
    if not isinstance(value, (int, float, str, bool)):
        return Problem(f"postprocess_overrides: {where} must be a plain value")
    if isinstance(value, str) and (any(c in FORBIDDEN for c in value) or value[:1] in "-."):
        return Problem(f"postprocess_overrides: {where} = {value!r} is refused: no paths, filters or "
                       "ffmpeg options in a sidecar")
    return None


def _overridden(step: Step, changes: dict[str, Any]) -> Step | list[Problem]:
    """The step with the overrides applied and validated again (strictly: "20" is no crf), or what is
    wrong with them."""
    if not changes:
        return step
    model = step_class(step.name)
    try:
        return model.model_validate({**step.model_dump(), **changes}, strict=True)
    except ValidationError as exc:
        return explain_errors(exc, model=model, at=("postprocess_overrides", step.name))
    except ValueError as exc:
        return [Problem(f"postprocess_overrides.{step.name}: {exc}")]
