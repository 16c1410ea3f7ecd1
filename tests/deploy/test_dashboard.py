"""The Dask dashboard is lensdask's monitoring surface: a real job on a real LocalCluster,
watched by a real headless Chromium on the dashboard's status page.

The screenshot is kept as a test artefact: test-artifacts/dashboard-status.png.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
TILES = 2

# The rectangles of the status page's Task Stream: the data source of the figure named
# "task_stream", one entry per task (its name is the key's prefix, here the stage).
TASK_STREAM_NAMES = """
if (typeof Bokeh === "undefined" || Bokeh.documents.length === 0) { return null; }
const figure = Bokeh.documents[0].get_model_by_name("task_stream");
if (figure === null) { return null; }
const names = [];
for (const renderer of figure.renderers) {
  const data = renderer.data_source.data;
  const column = data instanceof Map ? data.get("name") : data["name"];
  if (column !== undefined) { names.push(...Array.from(column)); }
}
return names;
"""


@pytest.fixture
def browser():
    """Headless Debian Chromium driven through its chromedriver (Selenium 4)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium: lensdask[test]")
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if driver_path is None or chromium is None:
        pytest.skip("needs chromium and chromedriver (deploy/system-packages.sh browser)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1600,1000")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def dashboard_client():
    """A 2-worker LocalCluster of its own (so its task stream holds only this job's tasks)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit="2GiB",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def wait_for(condition, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.slow
def test_task_stream_shows_the_jobs_tasks(browser, dashboard_client, tmp_path):
    from lensdask.config import MockSurveyConfig
    from lensdask.mock.survey import STAGE, make_mock_survey

    link = dashboard_client.dashboard_link
    assert link.startswith("http://127.0.0.1:") and link.endswith("/status")
    browser.get(link)
    wait_for(
        lambda: browser.execute_script(TASK_STREAM_NAMES) is not None,
        timeout=30,
        what="the status page's Bokeh document",
    )
    assert STAGE not in browser.execute_script(TASK_STREAM_NAMES)

    errors: list[BaseException] = []

    def run_job() -> None:
        try:
            config = MockSurveyConfig(tiles=TILES, tile_size=0.05, seed=3)
            make_mock_survey(tmp_path / "survey", config=config, client=dashboard_client)
        except BaseException as err:  # reported by the test thread
            errors.append(err)

    job = threading.Thread(target=run_job)
    job.start()
    try:
        names = wait_for(
            lambda: (
                [name for name in browser.execute_script(TASK_STREAM_NAMES) or [] if name == STAGE]
                or None
            ),
            timeout=40,
            what=f"{STAGE} tasks in the task stream",
        )
    finally:
        job.join(timeout=60)
    assert not errors, errors
    assert not job.is_alive()
    assert names
    # Once the job is done, the stream holds one rectangle per tile.
    wait_for(
        lambda: browser.execute_script(TASK_STREAM_NAMES).count(STAGE) == TILES,
        timeout=10,
        what=f"{TILES} {STAGE} rectangles",
    )
    assert "Task Stream" in browser.page_source

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "dashboard-status.png"
    assert browser.save_screenshot(str(screenshot))
    check_screenshot(screenshot)


def check_screenshot(path: Path) -> None:
    """A real rendering: a PNG of the window's size with many colours, not a blank page."""
    import numpy as np
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 20_000
    pixels = imread(path)
    height, width = pixels.shape[:2]
    assert width >= 1200 and height >= 700
    colours = np.unique(pixels[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) > 50
