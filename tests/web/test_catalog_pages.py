"""The gallery, /api/status and /metrics answer from the catalog's index: filters by backend, model,
worker and date; a clip published with its event shows at the next refresh, one put there by hand at
the reconciling walk; and a dashboard whose first walk of a large outbox is still under way serves
what it has indexed so far, and says so."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from i2v_watcher.catalog import events
from i2v_watcher.catalog import index as index_module
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import StartupError
from i2v_watcher.web import gallery as gallery_module
from i2v_watcher.web.app import create_app


def settings(root: Path) -> Settings:
    for name in ("inbox", "outbox", "failed", "done", "work"):
        (root / name).mkdir(exist_ok=True)
    return Settings(inbox=root / "inbox", outbox=root / "outbox", failed=root / "failed", done=root / "done",
                    work=root / "work", worker_id="gpu-a", web_page_size=5)


def publish(values: Settings, i: int, *, event: bool = True, **fields: Any) -> str:
    name = f"clip{i:03d}"
    data = {"job_id": f"job{i}", "name": name, "prompt": f"a fox number {i}",
            "worker_id": "gpu-" + "ab"[i % 2],
            "published_at": f"2026-12-{1 + i % 5:02d}T10:00:00+00:00", "backend": ("svd", "wan-i2v")[i % 2],
            "model": f"model-{i % 3}", "files": [f"{name}.mp4", f"{name}.json"], **fields}
    (values.outbox / f"{name}.json").write_text(json.dumps(data))
    if event:
        assert events.append(values, "published", path=f"{name}.json")
    return name


def shown(page: str) -> list[str]:
    return re.findall(r'<h2[^>]*>(clip\d+)', page) or re.findall(r'>(clip\d+)<', page)


def client(values: Settings) -> TestClient:
    return TestClient(create_app(values), base_url="http://127.0.0.1:8080")  # web_listen's default


@pytest.fixture
def often(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gallery_module, "REFRESH_S", 0.0)  # every request looks at the logs


def total(page: str) -> int:
    found = re.search(r"(\d+) clips?\b", page)
    assert found, page
    return int(found.group(1))


def test_filters_by_backend_model_worker_and_date(tmp_path: Path, often: None) -> None:
    values = settings(tmp_path)
    for i in range(30):
        publish(values, i, event=False)
    with client(values) as web:
        page = web.get("/gallery").text
        assert total(page) == 30 and "any backend" in page and '<option value="wan-i2v"' in page
        assert total(web.get("/gallery?backend=svd").text) == 15
        assert total(web.get("/gallery?backend=svd&model=model-0").text) == 5
        assert total(web.get("/gallery?worker=gpu-b&q=fox").text) == 15
        # A day is the whole day: from the 2nd to the 3rd holds the clips of both days.
        assert total(web.get("/gallery?since=2026-12-02&until=2026-12-03").text) == 12
        odd = web.get("/gallery?backend=nosuch&since=yesterday").text
        assert total(odd) == 30 and "backend=&#39;nosuch&#39;" in odd and "not a date" in odd
        pages = web.get("/gallery?backend=svd&until=2026-12-04&q=fox").text  # 12 clips, 5 a page
        link = re.search(r'href="/gallery\?([^"]*page=2)"', pages)
        assert total(pages) == 12 and link is not None, pages
        assert link.group(1).replace("&amp;", "&") == "q=fox&backend=svd&until=2026-12-04&page=2"

        publish(values, 100)  # with its event: shown at the next refresh, counted everywhere
        assert total(web.get("/gallery").text) == 31
        assert web.get("/api/status").json()["counts"]["published"] == 31
        assert "i2v_published_clips 31.0" in web.get("/metrics").text
        publish(values, 101, event=False)  # by hand: at the reconciling walk (catalog_rescan_s)
        assert web.get("/api/status").json()["counts"]["published"] == 31


def test_a_first_walk_serves_what_it_has_indexed_and_says_so(tmp_path: Path, often: None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    values = settings(tmp_path)
    for i in range(12):
        publish(values, i, event=False)
    monkeypatch.setattr(index_module, "BATCH", 5)
    monkeypatch.setattr(gallery_module, "FIRST_WAIT_S", 0.5)
    go_on, reads = threading.Event(), [0]
    real = index_module.read_metadata

    def slow(path: Path) -> Any:  # the walk stops after its first batch until the test lets it go on
        reads[0] += 1
        if reads[0] > 5:
            go_on.wait(30)
        return real(path)

    monkeypatch.setattr(index_module, "read_metadata", slow)
    with client(values) as web:
        page = web.get("/gallery").text  # waited FIRST_WAIT_S for the walk, then served
        assert 'id="indexing"' in page and total(page) == 5
        answer = web.get("/api/status").json()
        assert answer["indexing"] is True and answer["counts"]["published"] == 5
        go_on.set()
        for _ in range(100):
            answer = web.get("/api/status").json()
            if not answer["indexing"]:
                break
            threading.Event().wait(0.05)
        assert answer["counts"]["published"] == 12
        page = web.get("/gallery").text
        assert 'id="indexing"' not in page and total(page) == 12


def test_a_dashboard_without_a_writable_index_refuses_to_start(tmp_path: Path) -> None:
    values = settings(tmp_path).model_copy(update={"catalog_path": tmp_path / "outbox" / "x" / "c.sqlite"})
    (tmp_path / "outbox" / "x").write_text("a file where the index's folder belongs")
    with pytest.raises(StartupError, match=r"cannot open the catalog's index at .*c\.sqlite: .*catalog_path"):
        create_app(values)
