"""The quality gate's judgement on the dashboard: each card's verdict badge, symptoms and attempts, the
gallery filtered by verdict and symptom (with the search and the pages), /api/job and the web
process's /metrics counting the outbox's clips by backend, verdict and symptom."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Folders, announce
from i2v_watcher.catalog.judged import WORDS
from i2v_watcher.judge.score import SCORES, SYMPTOMS
from web.conftest import WebServer
from web.test_web_metrics import scrape

# name: (backend, verdict, symptoms, attempts); None: a clip published before the gate existed.
CLIPS: dict[str, tuple[str, str, list[str], int] | None] = {
    "fox-pass": ("wan-i2v", "pass", [], 1),
    "fox-fail": ("wan-i2v", "fail", ["no_motion", "flicker"], 1),
    "cat-fail": ("wan-i2v", "fail", ["flicker"], 1),
    "cat-warn": ("svd", "warn", ["drift"], 3),
    "old-clip": None,
}


def publish(outbox: Path, name: str, index: int, judged: tuple[str, str, list[str], int] | None,
            **extra: Any) -> None:
    """`<name>.json` as the daemon writes it into the outbox, beside the files it lists."""
    for suffix in (".mp4", ".jpg"):
        (outbox / f"{name}{suffix}").write_bytes(b"")
    data: dict[str, Any] = {
        "job_id": f"2026120{index}T000000Z-0000000{index}", "name": name, "prompt": f"a {name[:3]} runs",
        "published_at": f"2026-12-0{index + 1}T00:00:00+00:00", "backend": "wan-i2v", "seed": 7,
        "input": {"path": f"{name}.png"}, "files": [f"{name}.mp4", f"{name}.jpg", f"{name}.json"]}
    if judged is not None:
        backend, verdict, symptoms, attempts = judged
        scores = dict.fromkeys(SCORES, 0.5)
        data.update(backend=backend, quality={
            "scores": scores, "symptoms": symptoms, "verdict": verdict, "details": {"ssim": 0.9},
            "attempts": [{"seed": 7 + n, "changes": {}, "scores": scores, "symptoms": symptoms,
                          "verdict": verdict} for n in range(attempts)]})
    data.update(extra)
    (outbox / f"{name}.json").write_text(json.dumps(data))
    announce(outbox, f"{name}.json")


def get(server: WebServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"{server.url}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def cards(page: str) -> dict[str, str]:
    """Each card's name → its HTML."""
    return dict(re.findall(r'<article class="card clip" data-name="([^"]+)">(.*?)</article>', page, re.S))


def test_badges_filters_api_and_metrics(folders: Folders, web: Callable[..., WebServer]) -> None:
    server = web(web_page_size=2)
    for index, (name, judged) in enumerate(CLIPS.items()):
        publish(folders.outbox, name, index, judged)
    # Hand edits: a verdict that is none of the gate's, symptoms of another shape, quality not an object.
    publish(folders.outbox, "odd-verdict", 6, CLIPS["cat-warn"])
    data = json.loads((folders.outbox / "odd-verdict.json").read_text())
    data["quality"].update(verdict="<b>great</b>")
    (folders.outbox / "odd-verdict.json").write_text(json.dumps(data))
    publish(folders.outbox, "odd-shape", 7, None, quality="great")
    publish(folders.outbox, "odd-symptoms", 8, ("svd", "fail", [], 1))
    data = json.loads((folders.outbox / "odd-symptoms.json").read_text())
    data["quality"].update(symptoms=["blur", {"x": 1}, "<script>"])
    (folders.outbox / "odd-symptoms.json").write_text(json.dumps(data))

    status, page = get(server, "/gallery?page=3")  # newest first, two a page
    assert status == 200
    shown = cards(page)
    assert set(shown) == {"cat-warn", "cat-fail"}
    assert '<a class="verdict warn" href="/gallery?verdict=warn"' in shown["cat-warn"]
    assert WORDS["drift"] in shown["cat-warn"] and "3 attempts" in shown["cat-warn"]
    assert "attempts" not in shown["cat-fail"]

    shown = cards(get(server, "/gallery?page=2")[1])
    assert set(shown) == {"odd-verdict", "old-clip"}
    assert 'class="judgement"' not in shown["old-clip"]  # never judged: no badge at all
    assert 'class="judgement"' not in shown["odd-verdict"]

    status, page = get(server, "/gallery")
    shown = cards(page)
    assert set(shown) == {"odd-symptoms", "odd-shape"}
    assert 'class="judgement"' not in shown["odd-shape"]
    assert 'class="verdict fail"' in shown["odd-symptoms"]
    assert re.findall(r'data-symptom="([^"]*)"', shown["odd-symptoms"]) == ["blur"]  # the known one
    assert "great" not in page and "&lt;script&gt;" not in page

    status, page = get(server, "/gallery?verdict=fail&symptom=flicker")
    assert status == 200 and set(cards(page)) == {"fox-fail", "cat-fail"}
    assert "2 clips" in page and 'href="/gallery?verdict=fail"' in page
    fox = cards(page)["fox-fail"]
    assert fox.index(WORDS["no_motion"]) < fox.index(WORDS["flicker"]) and "attempts" not in fox
    assert 'title="The background flickers' in fox  # the table's advice, on the symptom
    assert set(cards(get(server, "/gallery?q=fox&verdict=fail&symptom=flicker")[1])) == {"fox-fail"}
    assert set(cards(get(server, "/gallery?q=cat&symptom=flicker")[1])) == {"cat-fail"}
    assert cards(get(server, "/gallery?verdict=pass&symptom=flicker")[1]) == {}

    status, page = get(server, "/gallery?verdict=fail")  # three: two pages, the link keeps the filter
    assert "3 clips" in page and 'href="/gallery?verdict=fail&amp;page=2"' in page
    assert set(cards(get(server, "/gallery?verdict=fail&page=2")[1])) == {"fox-fail"}  # the oldest
    assert '<option value="fail" selected>fail (3)</option>' in page  # counts beside the filter

    status, page = get(server, "/gallery?verdict=bogus&symptom=" + "x" * 5000)
    assert status == 200 and "8 clips" in page
    ignored = re.search(r'<p class="warning" id="ignored">(.*?)</p>', page, re.S)
    assert ignored and "verdict=&#39;bogus&#39; (not one of pass, warn, fail)" in ignored.group(1)
    assert "x" * 41 not in ignored.group(1)

    status, body = get(server, "/api/job?job=cat-warn")
    assert json.loads(body)["quality"] == {"verdict": "warn", "symptoms": ["drift"], "attempts": 3}
    assert json.loads(get(server, "/api/job?job=old-clip")[1])["quality"] is None

    metrics = scrape(server)
    assert metrics[("i2v_published_clips", ())] == 8

    def count(name: str, backend: str, label: str, value: str) -> float:
        return metrics[(name, tuple(sorted({"backend": backend, label: value}.items())))]

    assert count("i2v_published_clip_verdicts", "wan-i2v", "verdict", "fail") == 2
    assert count("i2v_published_clip_verdicts", "wan-i2v", "verdict", "pass") == 1
    assert count("i2v_published_clip_verdicts", "wan-i2v", "verdict", "warn") == 0
    assert count("i2v_published_clip_verdicts", "svd", "verdict", "warn") == 1  # the odd verdict: none
    assert count("i2v_published_clip_verdicts", "svd", "verdict", "fail") == 1
    assert count("i2v_published_clip_symptoms", "wan-i2v", "symptom", "flicker") == 2
    assert count("i2v_published_clip_symptoms", "wan-i2v", "symptom", "no_motion") == 1
    assert count("i2v_published_clip_symptoms", "svd", "symptom", "drift") == 1
    assert count("i2v_published_clip_symptoms", "svd", "symptom", "blur") == 1
    assert count("i2v_published_clip_symptoms", "svd", "symptom", "frozen") == 0
    assert sum(v for (name, _), v in metrics.items() if name == "i2v_published_clip_verdicts") == 5


def test_every_symptom_has_words() -> None:
    assert set(WORDS) == set(SYMPTOMS)
