"""The dashboard in a real browser: headless Chromium, driven by Selenium, against a real `i2v-watcher
web` over the folders of a real daemon. A person's paths through it: sign in, submit an image, follow
the job until its clip plays, find it in the gallery; watch the overview update live; retry a failed
job. Every page is saved as a screenshot under test-artifacts/screenshots/ for a person to look at."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select

from conftest import Daemon, Folders, make_image, wait_for
from web.conftest import ARTIFACTS, TOKEN, WebServer, writable
from web.test_verdicts import CLIPS, publish

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SHOTS = ARTIFACTS / "screenshots"
SIZES = {"desktop": (1280, 900), "phone": (390, 844)}
SLOW = {"backend": "slow", "plugins": ["slow_backend"]}  # tests/plugins: the preview, slowed per frame


@pytest.fixture(scope="module")
def chromium() -> Iterator[WebDriver]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run tests/setup.sh (it installs chromium and "
                    f"chromium-driver), which is part of the test command")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={SIZES['desktop'][0]},{SIZES['desktop'][1]}"):
        options.add_argument(arg)
    options.binary_location = str(CHROMIUM)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium: WebDriver) -> Iterator[WebDriver]:
    """One Chromium for the module, reset for each test: desktop size, no cookies (a cookie is per host,
    not per port, so one test's sign-in would otherwise reach the next test's server)."""
    resize(chromium, "desktop")
    chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})  # every site's, not only the open page's
    yield chromium
    chromium.get("about:blank")  # stop the page's polling before its server goes away


def resize(driver: WebDriver, size: str) -> None:
    """`desktop` (1280x900) or `phone` (390x844, a phone's viewport, touch and mobile layout)."""
    width, height = SIZES[size]
    if size == "phone":
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 2, "mobile": True})
    else:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        driver.set_window_size(width, height)


def shot(driver: WebDriver, name: str) -> Path:
    """The whole page (not only the viewport) as test-artifacts/screenshots/<name>.png."""
    import base64

    path = SHOTS / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    width = max(driver.execute_script("return window.innerWidth"), int(size["width"]))
    data = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": int(size["height"]), "scale": 1}})
    path.write_bytes(base64.b64decode(data["data"]))
    return path


def js(driver: WebDriver, script: str, *args: Any) -> Any:
    """Ask the page itself: a live region is replaced every second, so an element found by Selenium
    may be gone a moment later, while one script reads the DOM at one instant."""
    return driver.execute_script(script, *args)


def until(driver: WebDriver, script: str, *args: Any, timeout: float = 30, what: str = "") -> Any:
    def check() -> Any:
        value = js(driver, script, *args)
        if not value:
            time.sleep(0.1)  # a busy machine: poll the browser ten times a second, not twenty
        return value
    return wait_for(check, timeout, what or script)


def exists(selector: str) -> str:
    return f"return document.querySelector({selector!r}) !== null"


def sign_in(driver: WebDriver, server: WebServer, next_path: str = "/") -> None:
    driver.get(f"{server.url}/login?next={quote(next_path)}")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    wait_for(lambda: driver.current_url == server.url + next_path, 15, f"the sign-in to land on {next_path}")
    assert driver.find_elements(By.XPATH, "//header//button[normalize-space()='Sign out']")


def drop_failing(folders: Folders) -> None:
    """Two jobs that fail: bad (a good image, a sidecar over the frame limit: fails at its sidecar)
    and junk (not an image at all)."""
    (folders.inbox / "bad.yaml").write_text("prompt: a cat on a wall\nnum_frames: 100000\n")
    make_image(folders.inbox / "bad.png", seed=3)
    (folders.inbox / "junk.png").write_bytes(b"this is not a PNG, only its name says so\n" * 20)


def stopped(daemon: Daemon) -> None:
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0, daemon.log


def test_submit_follow_play_and_find_in_gallery(
        folders: Folders, start: Callable[..., Daemon], web: Callable[..., WebServer],
        browser: WebDriver, tmp_path: Path) -> None:
    start(folders.config)
    server = web(**writable())
    driver = browser

    driver.get(f"{server.url}/login")
    shot(driver, "login")
    sign_in(driver, server)

    driver.get(f"{server.url}/submit")
    assert driver.find_elements(By.ID, "submit-form"), driver.page_source
    archive = driver.find_element(By.CSS_SELECTOR, "input[name=postprocess][value=archive]")
    assert archive.is_selected(), "the config's default preset is checked"
    image = make_image(tmp_path / "picked" / "e2e-photo.png", size=(160, 120), seed=7)
    driver.find_element(By.CSS_SELECTOR, "input#image").send_keys(str(image))
    until(driver, "const p = document.getElementById('preview');"
                  "return !p.hidden && p.naturalWidth === 160 && p.getBoundingClientRect().height > 0",
          what="the drop zone's preview of the chosen image")
    assert "e2e-photo.png" in driver.find_element(By.ID, "drop-text").text
    driver.find_element(By.CSS_SELECTOR, "textarea[name=prompt]").send_keys(
        "a red lighthouse at dusk, waves rolling in, slow push in")
    note = driver.find_element(By.XPATH, "//input[@name='num_frames']/following-sibling::small").text
    assert note == "1 to 512 · default 6", note  # the limits and the config's default, no stray separator
    frames = driver.find_element(By.CSS_SELECTOR, "input[name=num_frames]")
    frames.clear()
    frames.send_keys("6")
    shot(driver, "submit")
    driver.find_element(By.ID, "submit-button").click()

    wait_for(lambda: "/follow?job=" in driver.current_url, 30, "the follow page after submitting")
    assert "job=e2e-photo" in driver.current_url
    seen: list[str] = []

    def state() -> bool:
        now = js(driver, "return document.getElementById('follow').dataset.state || ''")
        if now and (not seen or seen[-1] != now):
            seen.append(now)
        if now in ("failed", "published"):
            return True
        time.sleep(0.1)
        return False
    wait_for(state, 60, "the followed job to finish")
    print("follow page states seen:", seen)  # queued / in progress when the poll catches them
    assert seen[-1] == "published", (seen, driver.find_element(By.ID, "follow-state").text)
    assert set(seen) <= {"queued", "in progress", "unknown", "published"}, seen
    assert "Published as e2e-photo" in driver.find_element(By.ID, "follow-state").text

    # The clip plays: its metadata loads, it has a duration, and its time moves on while it plays.
    assert driver.find_elements(By.ID, "follow-video")
    video = "document.getElementById('follow-video')"
    until(driver, f"const v = {video}; return v.readyState >= 1 && v.duration > 0", timeout=30,
          what="the clip's metadata")
    assert js(driver, f"return {video}.error") is None
    assert js(driver, f"return {video}.muted && {video}.autoplay") is True
    js(driver, f"""const v = {video}; window.__played = 0; let last = v.currentTime;
        v.addEventListener('timeupdate', () => {{  // it loops: count only forward steps
            if (v.currentTime > last) window.__played += v.currentTime - last;
            last = v.currentTime; }});""")
    outcome = driver.execute_async_script(
        f"const done = arguments[arguments.length - 1];"
        f"{video}.play().then(() => done('playing'), (e) => done('refused: ' + e));")
    assert outcome == "playing"
    until(driver, "return window.__played >= 1.0", timeout=20, what="a second of the clip to play")
    assert js(driver, f"return {video}.videoWidth") > 0
    assert js(driver, f"return {video}.paused") is False
    assert js(driver, f"return {video}.error") is None
    links = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#follow-result a")]
    shot(driver, "follow-published")

    # The gallery: the clip's card with a playable video, its poster, and a download link per file.
    meta = folders.metadata("e2e-photo")
    assert len(links) == len(meta["files"]) and all("/files/" in (href or "") for href in links), links
    driver.get(f"{server.url}/gallery")
    card = driver.find_element(By.CSS_SELECTOR, '.clip[data-name="e2e-photo"]')
    player = card.find_element(By.TAG_NAME, "video")
    assert "/files/" in (player.get_attribute("poster") or ""), "the card's video has the poster"
    assert "/files/" in (player.get_attribute("src") or "")
    assert "lighthouse" in card.find_element(By.CSS_SELECTOR, ".prompt").text
    downloads = [a.get_attribute("href") or "" for a in card.find_elements(By.CSS_SELECTOR, ".downloads a")]
    for rel in meta["files"]:
        assert any(f"/files/{quote(rel)}" in href for href in downloads), (rel, downloads)
    statuses = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all(arguments[0].map((u) => fetch(u, {method: 'HEAD'}).then((r) => r.status)))"
        ".then(done, (e) => done(String(e)));", [player.get_attribute("poster"), *downloads])
    assert statuses == [200] * (1 + len(downloads)), statuses
    until(driver, "const v = document.querySelector('.clip video'); return v.readyState >= 2",
          what="the gallery's video's first frame")
    shot(driver, "gallery")

    search = driver.find_element(By.CSS_SELECTOR, "form.search input[name=q]")
    search.send_keys("lighthouse")
    driver.find_element(By.CSS_SELECTOR, "form.search button[type=submit]").click()
    wait_for(lambda: "q=lighthouse" in driver.current_url, 15, "the search to load")
    assert driver.find_elements(By.CSS_SELECTOR, '.clip[data-name="e2e-photo"]')
    driver.get(f"{server.url}/gallery?q=nonexistentword")
    assert not driver.find_elements(By.CSS_SELECTOR, ".clip")
    assert "No clips match" in driver.find_element(By.ID, "gallery").text

    resize(driver, "phone")
    driver.get(f"{server.url}/gallery")
    until(driver, "const v = document.querySelector('.clip video'); return v && v.readyState >= 2",
          what="the gallery's video's first frame")
    shot(driver, "gallery-phone")
    assert js(driver, "return document.documentElement.scrollWidth <= window.innerWidth"), \
        "the gallery scrolls sideways on a phone"


def test_overview_updates_live_without_reloading(
        folders: Folders, start: Callable[..., Daemon], web: Callable[..., WebServer],
        browser: WebDriver) -> None:
    folders.write_config(**SLOW)  # 16 frames at 0.25 s each: long enough to see the job in progress
    server = web()
    driver = browser
    driver.get(server.url + "/")
    assert "The inbox is empty." in driver.find_element(By.ID, "live").text
    js(driver, "window.__sameDocument = 'no reload since'")

    (folders.inbox / "live-job.yaml").write_text(
        "prompt: clouds drifting over hills\nnum_frames: 16\nbackend_options: {delay_s: 0.25}\n")
    make_image(folders.inbox / "live-job.png", size=(160, 120), seed=5)
    until(driver, exists('#queue tr[data-job="live-job"]'), what="the dropped job in the page's queue")
    until(driver, "return document.getElementById('count-queued').textContent.trim() === '1'",
          what="the queued count")
    until(driver, "const i = document.querySelector('#queue img.thumb'); return i && i.naturalWidth > 0",
          what="the queued job's thumbnail")
    shot(driver, "overview-queue")
    resize(driver, "phone")
    status = js(driver, "const row = document.querySelector('#queue tr[data-job=\"live-job\"]');"
                        "const cell = row.cells[3]; return cell.offsetWidth > 0 ? cell.innerText : ''")
    shot(driver, "overview-queue-phone")
    assert status.startswith(("settling", "next in line")), "a phone shows why the job waits"
    resize(driver, "desktop")

    daemon = start(folders.config)
    until(driver, exists('article.worker.alive[data-worker="testhost"]'), timeout=60,
          what="the started worker shown alive")
    until(driver, exists('#in-progress tr[data-job="live-job"]'), timeout=60,
          what="the job shown in progress")
    until(driver, exists('article.worker.alive .job[data-job="live-job"] progress'), timeout=30,
          what="the worker's progress bar for the job")
    shot(driver, "overview")
    resize(driver, "phone")
    shot(driver, "overview-phone")
    assert js(driver, "return document.documentElement.scrollWidth <= window.innerWidth"), \
        "the overview scrolls sideways on a phone"
    resize(driver, "desktop")
    until(driver, "return document.getElementById('live').textContent.includes('Nothing is being generated.')"
                  " && document.getElementById('live').textContent.includes('The inbox is empty.')",
          timeout=60, what="the job to leave the page once published")
    assert folders.files("outbox"), daemon.log
    assert js(driver, "return window.__sameDocument") == "no reload since", "the page was reloaded"
    # The worker's card follows its heartbeat (a beat every 2 s at most), a moment after the folders.
    until(driver, "const w = document.querySelector('article.worker.alive[data-worker=\"testhost\"]');"
                  "return w && w.textContent.includes('published 1') && !w.querySelector('.job')",
          timeout=30, what="the worker's card to count the clip and show it idle")
    assert js(driver, "return window.__sameDocument") == "no reload since", "the page was reloaded"


def test_failed_job_retried_from_the_page(
        folders: Folders, start: Callable[..., Daemon], web: Callable[..., WebServer],
        browser: WebDriver) -> None:
    daemon = start(folders.config)
    drop_failing(folders)
    wait_for(lambda: {"bad.error.json", "junk.error.json"} <= set(folders.files("failed")), 60,
             "both jobs to fail")
    stopped(daemon)  # so that the retried files stay in the inbox to be looked at
    report = folders.report("bad")
    server = web(**writable())
    driver = browser

    driver.get(f"{server.url}/failed")
    card = driver.find_element(By.CSS_SELECTOR, '.card.failed[data-name="bad"]')
    assert not card.find_elements(By.CSS_SELECTOR, "button.retry")
    assert card.find_element(By.LINK_TEXT, "Sign in to retry")
    sign_in(driver, server, "/failed")

    card = driver.find_element(By.CSS_SELECTOR, '.card.failed[data-name="bad"]')
    assert card.find_element(By.CSS_SELECTOR, ".stage").text == report["stage"]
    assert card.find_element(By.CSS_SELECTOR, ".message").text.strip() == report["message"].strip()
    assert "num_frames" in report["message"]
    until(driver, "const i = document.querySelector('.card.failed[data-name=\"bad\"] img.thumb');"
                  "return i && i.complete && i.naturalWidth > 0", what="the failed image's thumbnail")
    until(driver, exists('.card.failed[data-name="junk"] img.thumb.broken'),
          what="junk's thumbnail (there is none: it is not an image) hidden, not a broken icon")
    shot(driver, "failed")

    card.find_element(By.CSS_SELECTOR, "button.retry").click()
    wait_for(lambda: "retried=bad" in driver.current_url, 15, "the page after the retry")
    assert driver.find_element(By.CSS_SELECTOR, "p.ok").text == "bad is back in the inbox."
    assert not driver.find_elements(By.CSS_SELECTOR, '.card.failed[data-name="bad"]')
    assert driver.find_elements(By.CSS_SELECTOR, '.card.failed[data-name="junk"]')
    shot(driver, "failed-retried")
    assert {"bad.png", "bad.yaml"} <= set(folders.files("inbox"))
    assert "bad.error.json" not in folders.files("failed")


def test_read_only_dashboard_offers_no_writes(
        folders: Folders, start: Callable[..., Daemon], web: Callable[..., WebServer],
        browser: WebDriver) -> None:
    daemon = start(folders.config)
    (folders.inbox / "junk.png").write_bytes(b"not an image\n" * 50)
    wait_for(lambda: "junk.error.json" in folders.files("failed"), 60, "the junk job to fail")
    stopped(daemon)
    server = web()
    driver = browser

    driver.get(f"{server.url}/submit")
    main = driver.find_element(By.TAG_NAME, "main").text
    assert "This dashboard is read-only: submitting is off" in main
    assert not driver.find_elements(By.TAG_NAME, "form")
    assert not driver.find_elements(By.CSS_SELECTOR, "input[type=file]")
    assert driver.find_element(By.CSS_SELECTOR, "header .who").text == "read-only"
    shot(driver, "submit-read-only")

    driver.get(f"{server.url}/failed")
    assert driver.find_elements(By.CSS_SELECTOR, '.card.failed[data-name="junk"]')
    assert not driver.find_elements(By.CSS_SELECTOR, "button.retry")
    assert not driver.find_elements(By.CSS_SELECTOR, "form")
    assert "Sign in" not in driver.find_element(By.TAG_NAME, "main").text


def test_gallery_shows_verdicts_and_filters_by_them(folders: Folders, web: Callable[..., WebServer],
                                                    browser: WebDriver) -> None:
    server = web()
    for index, (name, judged) in enumerate(CLIPS.items()):
        publish(folders.outbox, name, index, judged)
        make_image(folders.outbox / f"{name}.jpg", size=(320, 180), seed=index)  # the card's poster
    driver = browser
    driver.get(f"{server.url}/gallery")
    badges = js(driver, "return [...document.querySelectorAll('.clip')].map((c) => c.dataset.name + ':' +"
                        "[...c.querySelectorAll('.judgement > *')].map((b) => b.innerText).join('|'))")
    assert badges == ["old-clip:", "cat-warn:WARN|drift from the image|3 attempts", "cat-fail:FAIL|flicker",
                      "fox-fail:FAIL|no motion|flicker", "fox-pass:PASS"], badges
    shot(driver, "gallery-verdicts")

    resize(driver, "phone")
    Select(driver.find_element(By.CSS_SELECTOR, "form.search select[name=verdict]")).select_by_value("fail")
    symptom = driver.find_element(By.CSS_SELECTOR, "form.search select[name=symptom]")
    Select(symptom).select_by_value("flicker")
    driver.find_element(By.CSS_SELECTOR, "form.search input[name=q]").send_keys("fox")
    driver.find_element(By.CSS_SELECTOR, "form.search button[type=submit]").click()
    wait_for(lambda: "verdict=fail" in driver.current_url, 15, "the filtered gallery to load")
    assert [c.get_attribute("data-name") for c in driver.find_elements(By.CSS_SELECTOR, ".clip")] == \
        ["fox-fail"]
    assert js(driver, "return document.documentElement.scrollWidth <= window.innerWidth"), \
        "the filters make the gallery scroll sideways on a phone"
    shot(driver, "gallery-filtered-phone")
    driver.find_element(By.CSS_SELECTOR, ".clip .judgement a.verdict").click()  # the badge: all failing
    wait_for(lambda: driver.current_url.endswith("/gallery?verdict=fail"), 15, "the badge's link")
    assert len(driver.find_elements(By.CSS_SELECTOR, ".clip")) == 2

    driver.get(f"{server.url}/follow?job=fox-fail")  # a job followed to its clip names the verdict too
    until(driver, "return document.getElementById('follow').dataset.state === 'published'",
          what="the follow page to find the clip")
    assert driver.find_element(By.ID, "follow-state").text == \
        "Published as fox-fail · quality gate: fail (no motion, flicker)"

    # One of a set's variants: its rank among those published so far, provisional (1 of 2 published).
    publish(folders.outbox, "hen", 8, CLIPS["fox-pass"],
            variant={"of": "20261208T000000Z-00000008", "name": "hen", "index": 1, "count": 2})
    driver.get(f"{server.url}/follow?job=hen")
    until(driver, "return document.getElementById('follow').dataset.state === 'published'",
          what="the follow page to find the variant")
    assert driver.find_element(By.ID, "follow-state").text == \
        "Published as hen · quality gate: pass · variant 1 of 2 · rank 1 (provisional)"


def test_queued_jobs_reordered_and_cancelled_from_the_overview(
        folders: Folders, web: Callable[..., WebServer], browser: WebDriver) -> None:
    for name in ("first", "second"):
        make_image(folders.inbox / f"{name}.png")
    server = web(**writable())
    driver = browser
    sign_in(driver, server, "/")
    until(driver, "return document.querySelectorAll('#queue button.up').length === 2",
          what="both jobs ready, with their priority's buttons")

    # Clicked from the page's own script: the live region is replaced every second.
    js(driver, "document.querySelector('#queue tr[data-job=\"second\"] button.up').click()")
    wait_for(lambda: "notice=" in driver.current_url, 15, "the page after the priority change")
    assert driver.find_element(By.ID, "notice").text == "second: priority 1"
    until(driver, "const r = document.querySelector('#queue tbody tr');"
                  "return r && r.dataset.job === 'second'",
          what="second first in line")

    js(driver, "document.querySelector('#queue tr[data-job=\"first\"] button.cancel').click()")
    wait_for(lambda: "first" in driver.current_url, 15, "the page after the cancel")
    assert driver.find_element(By.ID, "notice").text.startswith("first: cancelled by web session ")
    until(driver, "return [...document.querySelectorAll('#actions td')].map(t => t.textContent).join('|')"
                  ".includes('cancelled first')", what="the cancel in the recent actions")
    assert not driver.find_elements(By.CSS_SELECTOR, '#queue tr[data-job="first"]')
    shot(driver, "overview-controls")
    assert "first.png" in folders.files("failed") and "first.png" not in folders.files("inbox")


def test_a_running_worker_paused_and_resumed_from_the_overview(
        folders: Folders, start: Callable[..., Daemon], web: Callable[..., WebServer],
        browser: WebDriver) -> None:
    daemon = start(folders.config)
    server = web(**writable())
    driver = browser
    sign_in(driver, server, "/")
    card = 'article.worker.alive[data-worker="testhost"]'
    until(driver, exists(f"{card} button.pause"), timeout=60, what="the running worker and its Pause button")

    js(driver, f"document.querySelector('{card} button.pause').click()")
    wait_for(lambda: "notice=" in driver.current_url, 15, "the page after the pause")
    assert driver.find_element(By.ID, "notice").text.startswith("pausing worker testhost")
    until(driver, f"const s = document.querySelector('{card} .state.paused');"
                  "return s && s.textContent === 'paused'", what="the worker's heartbeat to say paused")
    assert js(driver, "return document.querySelector('.pause[data-pause=\"testhost\"]').textContent"
                      ".includes('paused: worker testhost (by web session ')")

    make_image(folders.inbox / "held.png", seed=4)
    until(driver, "const r = document.querySelector('#queue tr[data-job=\"held\"]');"
                  "return r && r.cells[3].textContent.includes('next in line')", what="the job ready")
    time.sleep(1.5)  # three of the daemon's loop turns: it would have claimed the job by now
    assert "held.png" in folders.files("inbox") and not folders.files("outbox")
    shot(driver, "overview-paused")

    js(driver, "document.querySelector('.pause[data-pause=\"testhost\"] button.resume').click()")
    wait_for(lambda: "notice=" in driver.current_url, 15, "the page after the resume")
    wait_for(lambda: folders.files("outbox"), 60, "the job published once resumed")
    until(driver, "const t = [...document.querySelectorAll('#actions td')].map(t => t.textContent);"
                  "return t.includes('resumed worker testhost') && t.includes('paused worker testhost')",
          what="the pause and the resume in the recent actions")
    stopped(daemon)
    order = ["paused by an operator: claiming nothing", "resumed: claiming again", "claimed"]
    assert [e["event"] for e in daemon.events() if e.get("event") in order] == order, daemon.log
