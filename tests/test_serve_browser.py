"""The server's web page in headless Chromium: a prompt streams text in and the disclaimer stays in view.

Needs Debian's chromium and chromium-driver (bash scripts/install_browser.sh). Skipped when they are
absent, unless LIGHTBRAIN_REQUIRE_BROWSER=1 (as in CI), which makes it a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")  # test_serve's fixtures need it
httpx = pytest.importorskip("httpx")

from lightbrain import DISCLAIMER  # noqa: E402
from lightbrain.inference.generate import generate_text  # noqa: E402
from lightbrain.inference.serve import ServeLimits, create_app, running_server  # noqa: E402

from test_serve import MODEL, EndlessSlowModel, tiny, wait_for  # noqa: E402,F401  (tiny is a fixture)

CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = Path("/tmp/lightbrain_serve_page.png")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


def _require_browser() -> str:
    chromium = shutil.which("chromium")
    if chromium and CHROMEDRIVER.is_file():
        return chromium
    message = "headless Chromium is absent (install it with: bash scripts/install_browser.sh)"
    if os.environ.get("LIGHTBRAIN_REQUIRE_BROWSER") == "1":
        pytest.fail(message + " and LIGHTBRAIN_REQUIRE_BROWSER=1 makes this test mandatory")
    pytest.skip(message)


@pytest.fixture
def browser(tmp_path):
    chromium = _require_browser()
    selenium = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = selenium.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1100,800"]:
        options.add_argument(flag)
    driver = selenium.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def disclaimer_in_view(driver) -> bool:
    return driver.execute_script(
        "const r = document.getElementById('disclaimer').getBoundingClientRect();"
        "return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight;")


def test_page_streams_a_completion_with_the_disclaimer_in_view(browser, tiny):  # noqa: F811
    from selenium.webdriver.common.by import By

    # each step takes a while and end-of-text never comes, so the text visibly arrives over seconds
    model = EndlessSlowModel(tiny.model, tiny.tokenizer.eot_id, delay=0.015)
    app = create_app(model, tiny.tokenizer, model_name=MODEL, limits=ServeLimits(max_tokens=400))
    with running_server(app) as url:
        browser.get(url + "/")
        element = browser.find_element
        assert element(By.ID, "disclaimer").is_displayed() and DISCLAIMER in element(By.ID, "disclaimer").text
        assert element(By.ID, "model-name").text == MODEL
        assert element(By.ID, "max_tokens").get_attribute("max") == "400"

        element(By.ID, "prompt").send_keys("The patient presented with")
        for field, value in (("temperature", "0"), ("top_k", "5"), ("max_tokens", "80")):
            element(By.ID, field).clear()
            element(By.ID, field).send_keys(value)
        element(By.ID, "generate").click()

        # streaming: some text shows while generation is still running (Stop enabled, Generate disabled)
        partial = wait_for(lambda: element(By.ID, "stop").is_enabled() and element(By.ID, "completion").text,
                           "the first streamed text")
        assert not element(By.ID, "generate").is_enabled()
        assert element(By.ID, "prompt-echo").text == "The patient presented with"
        status = wait_for(lambda: element(By.ID, "status").text.startswith("done") and element(By.ID, "status").text,
                          "generation to finish", seconds=60)
        final = element(By.ID, "completion").text
        assert len(final) > len(partial) and final.startswith(partial)
        assert "80 tokens" in status and "reached max tokens" in status

        # the text is the generation loop's greedy answer (whitespace as the browser shows it)
        model.delay = 0
        want = generate_text(model, tiny.tokenizer, "The patient presented with", 80, temperature=0)
        model.delay = 0.015
        assert " ".join(final.split()) == " ".join(want.split())

        browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        assert disclaimer_in_view(browser)
        browser.save_screenshot(str(SCREENSHOT))

        # Stop ends the stream in the page and frees the server's slot
        element(By.ID, "generate").click()
        wait_for(lambda: element(By.ID, "completion").text, "the second generation to start")
        element(By.ID, "stop").click()
        wait_for(lambda: element(By.ID, "status").text == "stopped", "the page to say stopped")
        wait_for(lambda: httpx.get(f"{url}/health").json()["active"] == 0, "the server to free the slot")
        assert httpx.get(f"{url}/health").json()["cancelled"] >= 1
