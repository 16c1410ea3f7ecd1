"""The grading page in a real headless Chromium (Debian's chromium + chromedriver, driven by
Selenium): keyboard grading, reload, going back to change a grade, the r-band toggle and
zoom, a server restart, and an invalid token."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from review_inputs import N_CANDIDATES

from lensdask.review.server import grader_link, make_server

CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    if not CHROMEDRIVER.exists() or shutil.which("chromium") is None:
        pytest.skip(
            "needs Debian's chromium and chromium-driver (deploy/system-packages.sh browser)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition, *, timeout: float = 10.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait_for(driver, lambda d: d.execute_script("return document.body.dataset.ready") == "1")
    wait_for(
        driver,
        lambda d: (
            d.execute_script(
                "const i = document.getElementById('stamp'); return i.complete && i.naturalWidth"
            )
            == 101
        ),
    )


def press(driver, key: str, *, graded_after: int | None = None) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()
    if graded_after is not None:
        wait_for(driver, lambda d: text(d, "progress").startswith(f"{graded_after} of "))
        wait_for(driver, lambda d: d.execute_script("return document.body.dataset.saving") == "0")


def pressed(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [
        letter
        for letter in "ABCD"
        if driver.find_element(By.ID, f"grade-{letter}").get_attribute("aria-pressed") == "true"
    ]


def test_grade_with_the_keyboard_reload_change_and_restart(browser, review_data, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    db = tmp_path / "grades.sqlite"
    ids = review_data.candidates["ID"].tolist()
    server = make_server(db, review_data.stamps, ids, port=0)
    store = server.app.store
    token = store.add_grader("ann")
    order = store.order("ann", ids)
    server.start()
    try:
        link = grader_link(server.url, token)
        open_page(browser, link)
        assert text(browser, "grader") == "ann"
        assert text(browser, "position") == f"candidate 1 of {N_CANDIDATES}"
        assert text(browser, "progress") == f"0 of {N_CANDIDATES} graded, {N_CANDIDATES} left"
        assert text(browser, "candidate") == order[0]
        assert "p_cnn" not in browser.page_source.lower()
        press(browser, "a", graded_after=1)
        press(browser, "C", graded_after=2)
        assert text(browser, "position") == f"candidate 3 of {N_CANDIDATES}"
        grades = store.grades("ann")
        assert dict(zip(grades["candidate_id"], grades["grade"], strict=True)) == {
            order[0]: "A",
            order[1]: "C",
        }
        # reload: the grades are there and the page resumes at the first ungraded
        open_page(browser, link)
        assert text(browser, "progress") == f"2 of {N_CANDIDATES} graded, {N_CANDIDATES - 2} left"
        assert text(browser, "position") == f"candidate 3 of {N_CANDIDATES}"
        # go back and change a grade: still one grade for that candidate
        press(browser, Keys.ARROW_LEFT)
        assert text(browser, "candidate") == order[1] and pressed(browser) == ["C"]
        press(browser, "d", graded_after=2)
        wait_for(browser, lambda d: text(d, "candidate") == order[2])
        grades = store.grades("ann")
        assert len(grades) == 2
        assert dict(zip(grades["candidate_id"], grades["grade"], strict=True))[order[1]] == "D"
        # r-band only and zoom
        stamp = browser.find_element(By.ID, "stamp")
        assert "kind=colour" in stamp.get_attribute("src")
        width = int(stamp.get_attribute("width"))
        press(browser, "t")
        assert "kind=mono" in stamp.get_attribute("src") and "r band only" in text(browser, "view")
        press(browser, "+")
        assert int(stamp.get_attribute("width")) == width + 101
        # a button grades too
        browser.find_element(By.ID, "grade-B").click()
        wait_for(browser, lambda d: text(d, "progress").startswith("3 of "))
    finally:
        server.stop()
    # a new server on the same database: nothing lost
    again = make_server(db, review_data.stamps, ids, port=0)
    again.start()
    try:
        open_page(browser, grader_link(again.url, token))
        assert text(browser, "progress") == f"3 of {N_CANDIDATES} graded, {N_CANDIDATES - 3} left"
        assert text(browser, "position") == f"candidate 4 of {N_CANDIDATES}"
        press(browser, Keys.ARROW_LEFT)
        press(browser, Keys.ARROW_LEFT)
        assert text(browser, "candidate") == order[1] and pressed(browser) == ["D"]
    finally:
        again.stop()


def test_an_invalid_token_is_refused(browser, grading):
    from selenium.webdriver.common.by import By

    grading.app.store.add_grader("ann")
    browser.get(grader_link(grading.url, "not-a-valid-token"))
    assert "No access" in browser.find_element(By.TAG_NAME, "h1").text
    assert browser.find_elements(By.ID, "stamp") == []
    browser.get(grading.url)
    assert "No access" in browser.page_source
    assert grading.app.store.grades().empty
