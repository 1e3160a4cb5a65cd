"""The web page in a real browser: headless Chromium (Selenium + chromium-driver) uploads an example
image of the synthetic world and finds the boxes drawn and the detection table."""

from __future__ import annotations

import shutil

import pytest

from glip.weights.demo import DEMO_EXAMPLES_DIR

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser():
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("chromium / chromium-driver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1200,1100")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_page_draws_the_detections(browser, demo_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(demo_server.url + "/")
    wait = WebDriverWait(browser, 60)
    # the classes hint of GET /models is pre-filled
    wait.until(lambda d: "purple star" in d.find_element(By.ID, "classes").get_property("value"))
    browser.find_element(By.ID, "image").send_keys(str(DEMO_EXAMPLES_DIR / "test_000002.png"))
    wait.until(lambda d: "press Detect" in d.find_element(By.ID, "status").text)
    browser.find_element(By.ID, "detect").click()
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")

    canvas = browser.find_element(By.ID, "canvas")
    drawn = int(canvas.get_attribute("data-detections"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#detections tbody tr")
    assert drawn > 0 and len(rows) == drawn
    assert browser.find_element(By.ID, "detections").is_displayed()
    assert (int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))) == (320, 320)
    assert "detection(s) in" in browser.find_element(By.ID, "status").text
    first = rows[0].find_elements(By.TAG_NAME, "td")
    assert first[1].text.strip() and 0.5 <= float(first[2].text) <= 1.0
    screenshot = tmp_path / "page.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 0
