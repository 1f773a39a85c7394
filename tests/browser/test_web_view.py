"""``lattice web`` in a real headless Chromium (Debian's chromium and chromium-driver,
driven by selenium), against a real supervisor.

Slow-ish (a browser start), so it has its own marker and line in ``.ci/run``. Without
the browser the tests skip, except under CI, where that is a failure. With
``LATTICE_SAVE_SCREENSHOT=1`` the board's screenshot is written to docs/web-view.png.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Project, make_project, stop_everything

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        reason = "no chromium/chromedriver (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-")
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,800",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    # Far above a page's load here (well under a second); a page that waits for a
    # connection its predecessors still hold (six per host) waited a minute.
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Project, str]]:
    """A project with three tasks and a slow worker, and `lattice-workers web` on it."""
    project = make_project(tmp_path)
    project.write_worker(
        "Slow",
        command='echo "web var: $WEB_ONLY"; for i in $(seq 1 400); do echo line $i; sleep 0.2; '
        'done',
        worktree=False,
        kill_grace_seconds=1,
    )
    for title in ("Fix the login redirect", "Write the docs", "Speed up the build"):
        project.create_task(title)
    # The supervisor first, without WEB_ONLY: a run started from the page must get the
    # environment of `lattice web`, not the supervisor's.
    project.cli("supervisor", "start")
    web = subprocess.Popen(
        [sys.executable, "-m", "lattice_workers", "web"],
        cwd=project.root, env={**project.env, "WEB_ONLY": "from-web"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert web.stdout is not None
        url = web.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and "?token=" in url, web.stderr
        yield project, url
    finally:
        web.terminate()
        try:
            web.wait(timeout=15)
        except subprocess.TimeoutExpired:
            web.kill()
        stop_everything(project)


def wait_for(driver: webdriver.Chrome, condition, timeout: float = 30):  # type: ignore[no-untyped-def]
    """``condition(driver)`` once truthy; an element replaced by a live redraw meanwhile
    (stale) is looked up again."""
    return WebDriverWait(
        driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    ).until(lambda d: condition(d))


def start_from_board(browser: webdriver.Chrome, task: str, worker: str | None = None) -> None:
    """Choose ``worker`` on ``task``'s card and press run, finding both afresh."""

    def press(d: webdriver.Chrome) -> bool:
        card = d.find_element(By.CSS_SELECTOR, f"[data-task='{task}']")
        if worker:
            Select(card.find_element(By.NAME, "worker")).select_by_visible_text(worker)
        card.find_element(By.CSS_SELECTOR, f"button[data-start='{task}']").click()
        return True

    wait_for(browser, press)


def test_a_request_without_the_token_is_refused(served: tuple[Project, str]) -> None:
    _, url = served
    base = url.split("?")[0]
    for path in ("", "events", "fragments/board", "runs/run_x"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + path, timeout=10)
        assert refused.value.code == 403
    wrong = urllib.request.Request(base + "runs", data=b"token=nope&worker=Slow&task=T-1")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(wrong, timeout=10)
    assert refused.value.code == 403


def test_start_watch_live_log_and_cancel_from_the_page(
    served: tuple[Project, str], browser: webdriver.Chrome
) -> None:
    project, url = served
    browser.get(url)
    # The card is read inside the wait: the board redraws itself when its live stream
    # opens, which replaces the element found a moment before.
    wait_for(
        browser,
        lambda d: "Fix the login redirect"
        in d.find_element(By.CSS_SELECTOR, "[data-task='T-1']").text,
    )
    start_from_board(browser, "T-1", "Slow")

    # The run's page: its log grows without a reload.
    wait_for(browser, lambda d: "/runs/run_" in d.current_url)
    browser.execute_script("window.notReloaded = true;")
    wait_for(browser, lambda d: "line 3\n" in d.find_element(By.ID, "log").text + "\n")
    assert "web var: from-web" in browser.find_element(By.ID, "log").text
    assert browser.execute_script("return window.notReloaded === true;")
    wait_for(browser, lambda d: "running" in d.find_element(By.ID, "record").text)

    # A second start of the same key is refused with the command line's words.
    run_id = browser.current_url.split("/runs/")[1].split("?")[0]
    browser.get(url)
    wait_for(
        browser, lambda d: "running" in d.find_element(By.CSS_SELECTOR, "[data-task='T-1']").text
    )
    start_from_board(browser, "T-1", "Slow")
    refusal = wait_for(browser, lambda d: d.find_element(By.CLASS_NAME, "error"))
    assert "ALREADY_RUNNING" in refusal.text

    # Back and forth between pages: each page's stream is let go when it is left (a
    # browser keeps left pages for its back button, and opens six connections to a
    # host at most), so that no page waits for a connection.
    run_page = url.replace("/?", f"/runs/{run_id}?")
    for _ in range(4):
        browser.get(url)
        browser.get(run_page)
        wait_for(browser, lambda d: "running" in d.find_element(By.ID, "record").text)
    browser.back()
    browser.forward()
    wait_for(browser, lambda d: "line" in d.find_element(By.ID, "log").text)

    # Cancel it from its page; the end arrives live.
    browser.get(run_page)

    def cancel(d: webdriver.Chrome) -> bool:
        d.find_element(By.ID, "cancel").click()  # found afresh: the record redraws live
        return True

    wait_for(browser, cancel)
    browser.execute_script("window.notReloaded = true;")

    def ended_record(d: webdriver.Chrome) -> str | None:
        text: str = d.find_element(By.ID, "record").text
        return text if "failed" in text else None

    assert "cancelled" in wait_for(browser, ended_record)
    assert [e["type"] for e in project.process_events("T-1")] == [
        "process_started", "process_failed"
    ]


def test_the_board_shows_live_runs_as_they_change(
    served: tuple[Project, str], browser: webdriver.Chrome
) -> None:
    project, url = served
    project.write_worker("Quick", command="echo kept by the run > kept.txt")
    quick = project.json("worker", "run", "Quick", "T-1", "--wait")["data"][0]["run_id"]
    # Its page shows the work it kept (a worktree run that wrote a file).
    browser.get(url.replace("/?", f"/runs/{quick}?"))
    assert "+kept by the run" in wait_for(browser, lambda d: d.find_element(By.ID, "kept")).text
    project.cli("status", "T-1", "planned")
    project.cli("status", "T-3", "in_planning")
    browser.get(url)
    wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "[data-task='T-2']"))
    browser.execute_script("window.notReloaded = true;")
    first = project.json("worker", "run", "Slow", "T-2")["data"]["run_id"]
    project.json("worker", "run", "Slow", "T-3")
    wait_for(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".runs .state.running")) == 2,
    )
    assert browser.execute_script("return window.notReloaded === true;")
    time.sleep(0.5)  # let the fonts settle for the picture
    shot = browser.get_screenshot_as_png()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000
    if os.environ.get("LATTICE_SAVE_SCREENSHOT") == "1":
        (REPO / "docs" / "web-view.png").write_bytes(shot)
    project.cli("worker", "cancel", first)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"[data-run='{first}'] .failed"))
