"""What this machine offers a diffusion backend, asked before anything is loaded (by `backend = "auto"`,
the resolution "auto", and `doctor`): whether the `diffusion` extra is installed, and which resolution
its GPU's memory allows for a model (its card)."""

from __future__ import annotations

import importlib.util

from i2v_watcher.backends.card import WEBUI_CARD, ModelCard

DIFFUSION_EXTRA = ("torch", "diffusers", "transformers", "huggingface_hub")


def missing_extra() -> str | None:
    """The first package of the `diffusion` extra that cannot be imported, or None."""
    for name in DIFFUSION_EXTRA:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):  # a broken install counts as missing
            return name
    return None


def gpu_memory_gib(device: str) -> float | None:
    """The total memory of the CUDA device in GiB; None without one (a CPU device, no CUDA)."""
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    return float(torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30)


def auto_short_side(device: str, card: ModelCard = WEBUI_CARD) -> tuple[int, str]:
    """The short side `resolution: auto` gives `card`'s model on this device, and why (card.auto_side)."""
    return card.auto_side(gpu_memory_gib(device))
