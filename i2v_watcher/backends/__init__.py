"""The backend registry. Adding a model is adding one module to this package (or to a `plugins`
module named in the config) that defines a Backend subclass decorated with `@register`."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import TypeVar

from i2v_watcher.backends.base import Audio, Backend, Frames, Progress
from i2v_watcher.errors import StartupError

__all__ = ["Audio", "Backend", "Frames", "Progress", "available", "get", "register", "with_models"]

_REGISTRY: dict[str, type[Backend]] = {}
B = TypeVar("B", bound=type[Backend])


def register(cls: B) -> B:
    _REGISTRY[cls.name] = cls
    return cls


def discover(plugins: Iterable[str] = ()) -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")
    for name in plugins:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise StartupError(f"cannot import plugin module {name!r}: {exc}") from exc


def available() -> list[str]:
    return sorted(_REGISTRY)


def with_models() -> list[str]:
    return sorted(name for name, cls in _REGISTRY.items() if cls.uses_model)


def get(name: str) -> type[Backend]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise StartupError(f"unknown backend {name!r}; available: {', '.join(available())}") from None
