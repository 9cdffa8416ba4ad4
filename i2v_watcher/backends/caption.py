"""The image captioner of `[caption]`: a small image-text-to-text model (Florence-2, BLIP, SmolVLM, ...)
loaded once at start-up through transformers' generic AutoProcessor and AutoModelForImageTextToText,
resident beside the video model, that describes a job's image in words (run.prompting makes the
prompt of them).

torch and transformers are imported inside the functions: the core install has neither."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from PIL import Image

from i2v_watcher.backends.loading import locate, torch_dtype
from i2v_watcher.config.caption import CaptionSettings
from i2v_watcher.config.models import DiffusionSettings, ModelSettings
from i2v_watcher.errors import StartupError
from i2v_watcher.logs import adopt_library_loggers

# What each family is asked when `task` is unset; a model with a chat template gets CHAT_TASK.
FAMILY_TASKS = {"florence2": "<DETAILED_CAPTION>", "blip": ""}
CHAT_TASK = "Describe this image in one sentence."
WHAT = "an image captioner (an image-text-to-text model such as Florence-2, BLIP or SmolVLM)"


class Captioner:
    """Loaded once (`load`), then `caption` any number of times, from any thread (one at a time)."""

    def __init__(self, settings: CaptionSettings, diffusion: DiffusionSettings) -> None:
        assert settings.model is not None
        self.settings = settings
        self.model_id = settings.model
        # The device and dtype rules of the video models, with [caption]'s own where it sets them.
        self.options = diffusion.model_copy(update={"device": settings.device or diffusion.device,
                                                    "dtype": settings.dtype or diffusion.dtype})
        self.processor: Any = None
        self.model: Any = None
        self.task = ""
        self._lock = threading.Lock()  # the preload thread and a stage may both ask

    def load(self) -> None:
        """The model and its processor from their folder or the cache; a StartupError when they are
        missing, cannot be loaded here, or are not a captioner."""
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise StartupError(f"[caption] needs the diffusion extra, and {exc.name or exc} is not "
                               "installed: pip install 'i2v-watcher[diffusion]', or leave [caption] model "
                               "unset") from exc
        device = self.options.device
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise StartupError(f"[caption] runs on {device}, but this machine has no usable CUDA GPU "
                               '(set [caption] device = "cpu")')
        where = locate("caption", ModelSettings(model=self.model_id), table="caption")
        with contextlib.suppress(ImportError):  # it sets up a logging handler of its own on import
            __import__("transformers.utils.logging")
        adopt_library_loggers()
        local = self.options.local_files_only
        auto: Any = transformers  # untyped: what it loads depends on the folder
        try:
            processor = auto.AutoProcessor.from_pretrained(where, local_files_only=local)
            model = auto.AutoModelForImageTextToText.from_pretrained(
                where, dtype=torch_dtype(self.options), local_files_only=local)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StartupError(f"cannot load the [caption] model {self.model_id!r} as {WHAT}: {exc}") from exc
        if getattr(processor, "image_processor", None) is None:
            raise StartupError(f"the [caption] model {self.model_id!r} has no image processor: it is not "
                               f"{WHAT}")
        self.processor, self.model = processor, model.to(torch.device(device)).eval()
        self.task = self._task(model.config.model_type)
        adopt_library_loggers()

    def _task(self, family: str) -> str:
        if self.settings.task is not None:
            return self.settings.task
        if family in FAMILY_TASKS:
            return FAMILY_TASKS[family]
        return CHAT_TASK if getattr(self.processor, "chat_template", None) else ""

    def caption(self, image: Image.Image) -> str:
        """The image described in words, on one line (greedy decoding: the same image, the same words)."""
        import torch

        assert self.model is not None, "load() first"
        with self._lock, torch.inference_mode():
            inputs = self._inputs(image.convert("RGB"))
            out = self.model.generate(**inputs, max_new_tokens=self.settings.max_new_tokens, do_sample=False)
        return self._decode(out[0], inputs.get("input_ids"))

    def _inputs(self, image: Image.Image) -> Any:
        text = self.task
        if text and getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(images=[image], **({"text": [text]} if text else {}), return_tensors="pt")
        return inputs.to(device=self.model.device, dtype=self.model.dtype)  # the dtype: floats only

    def _decode(self, ids: Any, prompt: Any) -> str:
        """The generated words only: a decoder-only model repeats the question before its answer (BLIP
        repeats it with its first token replaced, so that case is told by the text)."""
        lead = ""
        if prompt is not None:
            prompt = prompt[0]
            if len(ids) >= len(prompt) and bool((ids[:len(prompt)] == prompt).all()):
                ids = ids[len(prompt):]
            else:
                lead = self.processor.decode(prompt, skip_special_tokens=True).strip()
        text = " ".join(self.processor.decode(ids, skip_special_tokens=True).split())
        return text[len(lead):].strip() if lead and text.startswith(lead) else text


def caption_model_problem(settings: CaptionSettings) -> str | None:
    """Why [caption] model could not load as a captioner, told from its files alone (doctor), or None."""
    if settings.model is None:
        return None
    try:
        where = locate("caption", ModelSettings(model=settings.model), table="caption")
        import transformers

        config = transformers.AutoConfig.from_pretrained(where, local_files_only=True)
    except ImportError as exc:
        return f"[caption] needs the diffusion extra, and {exc.name or exc} is not installed"
    except (StartupError, OSError, ValueError) as exc:
        return f"[caption] model {settings.model!r}: {exc}"
    families = transformers.models.auto.modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    if config.model_type not in families:
        return f"[caption] model {settings.model!r} is a {config.model_type} model, not {WHAT}"
    return None
