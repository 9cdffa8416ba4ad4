"""The post-processing step registry: one module per step in this package, each defining a Step
subclass decorated with `@register`. Presets (config) are lists of steps, the last an output step."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, TypeVar

from pydantic import ValidationError

from i2v_watcher.job.spec import describe_validation_error
from i2v_watcher.steps.base import Clip, OutputStep, Step

__all__ = ["Clip", "OutputStep", "Step", "available", "dump_step", "parse_chain", "parse_step", "register",
           "step_class"]

_REGISTRY: dict[str, type[Step]] = {}
S = TypeVar("S", bound=type[Step])


def register(cls: S) -> S:
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    if not _REGISTRY:
        for module in pkgutil.iter_modules(__path__):
            if module.name != "base":
                importlib.import_module(f"{__name__}.{module.name}")


def available() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def step_class(name: str) -> type[Step]:
    _discover()
    if name not in _REGISTRY:
        raise ValueError(f"unknown step {name!r}; steps: {', '.join(available())}")
    return _REGISTRY[name]


def parse_step(raw: dict[str, Any]) -> Step:
    """{"step": "scale_pad", "width": 1080, ...} → a validated step; ValueError with a readable reason."""
    _discover()
    params = dict(raw)
    kind = str(params.pop("step", None))
    cls = step_class(kind)
    try:
        return cls.model_validate(params)
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc, f"step {kind!r}", model=cls)) from None


def parse_chain(raw_steps: list[dict[str, Any]]) -> list[Step]:
    steps = [parse_step(raw) for raw in raw_steps]
    if not steps or not isinstance(steps[-1], OutputStep):
        raise ValueError("a preset must end with an output step (encode, poster, gif or webp)")
    if any(isinstance(step, OutputStep) for step in steps[:-1]):
        raise ValueError("only the last step of a preset may be an output step")
    return steps


def dump_step(step: Step) -> dict[str, Any]:
    return {"step": step.name, **step.model_dump(mode="json")}
