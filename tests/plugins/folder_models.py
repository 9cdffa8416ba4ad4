"""A test plugin: two backends that load a "model" from a folder, as a diffusion backend loads its
weights (`uses_model`, a [models.<name>] table), at the cost of a file read: what the model swap
(swap_backends) is tested with in a real daemon without the minutes a real model takes. The model is
the folder's `model.txt`; a folder without one cannot be loaded (a broken model folder). Each job
records which model text it ran with, so a test can tell that the right model was loaded."""

from __future__ import annotations

from typing import ClassVar

from PIL import Image

from i2v_watcher.backends import register
from i2v_watcher.backends.base import Frames, Progress
from i2v_watcher.backends.preview import PreviewBackend
from i2v_watcher.errors import StartupError
from i2v_watcher.job.spec import JobParams


class FolderModel(PreviewBackend):
    uses_model: ClassVar[bool] = True

    def load(self) -> None:
        folder = self.settings.models[self.name].model
        try:
            with open(f"{folder}/model.txt", encoding="utf-8") as handle:
                self.text: str | None = handle.read().strip()
        except OSError as exc:
            raise StartupError(f"the model folder {folder} of {self.name} holds no model.txt: "
                               f"{exc.strerror}") from exc
        self.model_id = folder

    def generate(self, image: Image.Image, params: JobParams, progress: Progress,
                 preloaded: object | None = None) -> Frames:
        frames = super().generate(image, params, progress, preloaded)
        frames.details["model_text"] = self.text
        return frames


@register
class FolderA(FolderModel):
    name = "folder-a"


@register
class FolderB(FolderModel):
    name = "folder-b"


@register
class FolderBroken(FolderModel):
    name = "folder-broken"
