"""The web form's submit runs the one job check (run/check.py, with the one rule set for presets and
overrides): for the same values it refuses what `i2v-watcher submit` refuses, with the same problems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import Folders, cli, make_image
from web.conftest import writable
from web.test_security import inbox_files, png_bytes, submit

# What the form can send (sidecar fields only): a value out of range, an override out of range, one
# not on the allow-list and one smuggling filter syntax.
FIELDS = {"postprocess": "archive", "num_frames": "0",
          "postprocess_overrides": "{encode: {crf: 99, codec: libx265}, scale_pad: {color: 'a;b'}}"}
EXPECTED = {
    "num_frames must be from 1 to 512 (got 0)",
    "postprocess_overrides: encode.codec cannot be overridden",
    "postprocess_overrides.encode.crf must be from 0 to 63 (got 99)",
    "postprocess_overrides: scale_pad.color = 'a;b' is refused: no paths, filters or ffmpeg options in a "
    "sidecar",
}


def problems(message: str) -> set[str]:
    return {line[len("  - "):] for line in message.splitlines() if line.startswith("  - ")}


def test_the_web_form_and_submit_report_the_same_problems(folders: Folders, web: Any, tmp_path: Path) -> None:
    server = web(**writable())
    status, _, body = submit(server, FIELDS, ("a.png", png_bytes(), "image/png"))
    assert status == 400 and inbox_files(folders) == [], body
    by_form = problems(json.loads(body)["error"])

    sets = [item for key, value in FIELDS.items() for item in ("--set", f"{key}={value}")]
    refused = cli("submit", str(make_image(tmp_path / "a.png")), *sets, "--config", str(folders.config))
    assert refused.returncode == 2, refused.stderr

    assert by_form == problems(refused.stderr) == EXPECTED
