"""The explorer (``genlab serve``) in a real browser: Debian's headless Chromium driven by Selenium through its
chromedriver, against a real uvicorn server on a free loopback port that serves the tiny runs of ``served_runs``.

What the API tests cannot see is checked here: the page of every kind of run loads with no failed request and no
console error, and each control changes what is shown (a slider, a class button, an interpolation, a streamed
completion with its progress bar and its Cancel button, a text interpolation, two views side by side). Images are
compared by their pixels, decoded from the PNG data URLs the page shows. Without chromium, chromedriver or selenium
the module skips and its reason names what is missing and how to install it (``make test`` installs the browser
when it runs as root on Debian, and prints skip reasons).

With GENLAB_SCREENSHOT_DIR set, a screenshot of the VAE view (an encoded test image and an interpolation) is saved
there as explorer.png, small enough for the README (docs/explorer.png is made this way)."""
from __future__ import annotations

import base64
import functools
import io
import json
import os
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from helpers import TINY_POEMS

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # the skip below says how to install it
    webdriver = None

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _missing() -> list[str]:
    missing = []
    if CHROMIUM is None:
        missing.append("the chromium program (apt-get install chromium)")
    if CHROMEDRIVER is None:
        missing.append("the chromedriver program (apt-get install chromium-driver)")
    if webdriver is None:
        missing.append("the selenium package (pip install selenium, or pip install -e '.[dev]')")
    return missing


pytestmark = pytest.mark.skipif(
    bool(_missing()),
    reason="browser tests of `genlab serve` need " + "; ".join(_missing()) + " (`make test` installs the browser "
           "when run as root on Debian)")

# the runs served, in this order: run id "i" is RUN_ORDER[i]; the VAE is served a second time as TWIN, so that a
# side-by-side page has two views with the same latent size (no two different fixture runs share one)
RUN_ORDER = ("vae", "cvae", "pixelcnn", "dim", "gan", "bigan", "text")
RUN_ID = {name: str(i) for i, name in enumerate(RUN_ORDER)}
TWIN = str(len(RUN_ORDER))

# per run: a control its page must show and how many of them (the fixture's latent sizes, ten digit classes)
CONTROLS = {"vae": (".dim-slider", 4), "cvae": (".class-btn", 10), "pixelcnn": (".ar-complete", 1),
            "dim": (".neighbours-go", 1), "gan": (".dim-slider", 6), "bigan": (".dim-slider", 5),
            "text": (".text-interp-go", 1)}
DECODED = ("vae", "cvae", "gan", "bigan")  # pages whose main image is there as soon as the page is ready
WAIT = 20.0  # seconds for anything the page does; the tiny models answer in milliseconds


# --- the server and the browser ---

@pytest.fixture(scope="module")
def server(served_runs: dict[str, Path]) -> Iterator[str]:
    """The real app on uvicorn in a background thread, on a loopback socket bound here (a free port, no race);
    stopped at the end of the module. Yields the base URL."""
    import uvicorn

    from genlab.serve.app import create_app

    app = create_app([served_runs[name] for name in RUN_ORDER] + [served_runs["vae"]])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the explorer's server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    """Headless Chromium through the system chromedriver (given explicitly, so Selenium Manager downloads
    nothing), logging the console and the network (the performance log) for ``problems``."""
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        browser.set_script_timeout(WAIT)
        browser.execute_cdp_cmd("Network.enable", {})
        yield browser
    finally:
        browser.quit()


def problems(driver: Any) -> list[str]:
    """Console errors and failed requests (an HTTP status >= 400, or a request that failed other than by being
    cancelled) since the last call: reading the logs empties them."""
    found = [f"console: {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    urls: dict[str, str] = {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"][:120]
        elif message["method"] == "Network.responseReceived" and params["response"]["status"] >= 400:
            found.append(f"HTTP {params['response']['status']}: {params['response']['url'][:120]}")
        elif message["method"] == "Network.loadingFailed" and not params.get("canceled"):
            found.append(f"request failed ({params.get('errorText')}): {urls.get(params['requestId'])}")
    return found


def open_page(driver: Any, url: str) -> None:
    """Load ``url`` and wait for ``#status`` to say "ready" (the first image of every view is there)."""
    problems(driver)  # what earlier tests left in the logs is theirs
    driver.get(url)

    def settled(d: Any) -> str | bool:
        text = d.find_element(By.ID, "status").text.strip()
        return text if text == "ready" or text.startswith("error") else False

    assert wait(driver, settled) == "ready"


def wait(driver: Any, condition: Callable[[Any], Any], timeout: float = WAIT) -> Any:
    """``condition(driver)`` once it is true; a timeout fails with what the page's status line says."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05,
                             ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except TimeoutException:
        status = driver.find_element(By.ID, "status").text
        raise AssertionError(f"the page did not get there in {timeout:g} s; its status says {status!r}") from None


def view(driver: Any, run_id: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'div.view[data-run="{run_id}"]')


def pixels(data_url: str | None) -> np.ndarray:
    """The pixels of a PNG data URL (RGB, signed, so that differences can be taken)."""
    assert data_url and data_url.startswith("data:image/png;base64,"), (data_url or "")[:60]
    with Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def srcs(element: WebElement, selector: str) -> list[str]:
    """The src of every image ``selector`` inside ``element``, read in one step (the page may replace them)."""
    return element.parent.execute_script(
        "return Array.from(arguments[0].querySelectorAll(arguments[1]), (img) => img.getAttribute('src'))",
        element, selector)


def src(element: WebElement, selector: str) -> str | None:
    found = srcs(element, selector)
    return found[0] if found else None


def changed_image(driver: Any, element: WebElement, selector: str, before: str | None) -> np.ndarray:
    """Wait until the image ``selector`` inside ``element`` shows other pixels than the data URL ``before``."""
    old = pixels(before) if before else None

    def differs(_: Any) -> list[np.ndarray] | bool:
        now = src(element, selector)
        if not now or not now.startswith("data:image/png"):
            return False
        new = pixels(now)
        return [new] if old is None or new.shape != old.shape or np.abs(new - old).max() > 0 else False

    return wait(driver, differs)[0]


def api(server: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        return json.load(response)


def has_class(element: WebElement, name: str) -> bool:
    return name in (element.get_attribute("class") or "").split()


def type_into(element: WebElement, text: str) -> None:
    element.clear()
    element.send_keys(text)


# --- loading ---

@pytest.mark.parametrize("name", RUN_ORDER)
def test_page_loads_with_no_failed_request_and_no_console_error(driver: Any, server: str, name: str) -> None:
    open_page(driver, f"{server}/?run={RUN_ID[name]}")
    views = driver.find_elements(By.CSS_SELECTOR, "div.view")
    assert [v.get_attribute("data-run") for v in views] == [RUN_ID[name]]
    selector, count = CONTROLS[name]
    assert len(views[0].find_elements(By.CSS_SELECTOR, selector)) == count, selector
    if name in DECODED:
        pixels(src(views[0], ".main-image"))
    assert problems(driver) == []


# --- latent models ---

def test_moving_a_slider_changes_the_image(driver: Any, server: str) -> None:
    open_page(driver, f"{server}/?run={RUN_ID['vae']}")
    page = view(driver, RUN_ID["vae"])
    # one slider per dim, in the order of their KL (the server's), the inactive ones marked
    sliders = page.find_elements(By.CSS_SELECTOR, ".dim-slider")
    dims = api(server, f"/api/runs/{RUN_ID['vae']}")["dims"]
    assert [(int(s.get_attribute("data-dim")), has_class(s, "inactive")) for s in sliders] == \
        [(d["index"], not d["active"]) for d in dims]
    before = src(page, ".main-image")
    slider = sliders[0]  # the dim with the largest KL
    start = float(slider.get_attribute("value"))
    slider.send_keys(Keys.END)
    assert float(slider.get_attribute("value")) > start
    changed_image(driver, page, ".main-image", before)
    assert problems(driver) == []


def test_a_class_button_changes_the_class(driver: Any, server: str) -> None:
    open_page(driver, f"{server}/?run={RUN_ID['cvae']}")
    page = view(driver, RUN_ID["cvae"])
    buttons = page.find_elements(By.CSS_SELECTOR, ".class-btn")
    active = [b.get_attribute("data-label") for b in buttons if has_class(b, "active")]
    assert len(active) == 1
    target = next(b for b in reversed(buttons) if b.get_attribute("data-label") != active[0])
    before = src(page, ".main-image")
    target.click()
    wait(driver, lambda _: [b.get_attribute("data-label") for b in buttons if has_class(b, "active")]
         == [target.get_attribute("data-label")])
    changed_image(driver, page, ".main-image", before)
    assert problems(driver) == []


def test_interpolation_shows_the_requested_number_of_frames(driver: Any, server: str) -> None:
    open_page(driver, f"{server}/?run={RUN_ID['vae']}")
    page = view(driver, RUN_ID["vae"])
    # encoding a test image (a click in the strip) moves the sliders to its code and shows its reconstruction
    sliders = page.find_elements(By.CSS_SELECTOR, ".dim-slider")
    codes = [s.get_attribute("value") for s in sliders]
    before = src(page, ".main-image")
    page.find_element(By.CSS_SELECTOR, '.test-strip img[data-index="2"]').click()
    changed_image(driver, page, ".main-image", before)
    wait(driver, lambda _: [s.get_attribute("value") for s in sliders] != codes)

    Select(page.find_element(By.CSS_SELECTOR, ".interp-a")).select_by_value("0")
    Select(page.find_element(By.CSS_SELECTOR, ".interp-b")).select_by_value("1")
    for steps, mode in ((7, "linear"), (3, "spherical")):
        Select(page.find_element(By.CSS_SELECTOR, ".interp-mode")).select_by_value(mode)
        type_into(page.find_element(By.CSS_SELECTOR, ".interp-steps"), str(steps))
        old = srcs(page, ".interp-frames img")
        page.find_element(By.CSS_SELECTOR, ".interp-go").click()

        def frames(_: Any, steps: int = steps, old: list[str] = old) -> list[str] | bool:
            now = srcs(page, ".interp-frames img")
            done = len(now) == steps and now != old and all(s and s.startswith("data:image/png") for s in now)
            return now if done else False

        shown = wait(driver, frames)
        assert np.abs(pixels(shown[0]) - pixels(shown[-1])).max() > 0  # two different test images at the ends
        pixels(src(page, ".interp-anim"))
        if steps == 7:
            _screenshot(driver)
    assert problems(driver) == []


def test_side_by_side_moves_both_views(driver: Any, server: str) -> None:
    left, right = RUN_ID["vae"], TWIN
    open_page(driver, f"{server}/?runs={left},{right}")
    views = driver.find_elements(By.CSS_SELECTOR, "div.view")
    assert [v.get_attribute("data-run") for v in views] == [left, right]
    before = [src(v, ".main-image") for v in views]
    others = views[1].find_elements(By.CSS_SELECTOR, ".dim-slider")
    start = [s.get_attribute("value") for s in others]
    views[0].find_elements(By.CSS_SELECTOR, ".dim-slider")[0].send_keys(Keys.END)
    for v, old in zip(views, before):
        changed_image(driver, v, ".main-image", old)
    assert [s.get_attribute("value") for s in others] != start  # the move shows on the other view's slider too
    assert problems(driver) == []


# --- autoregressive models: a streamed completion ---

# Records every value and max the page gives a progress bar (property or attribute), with the result image shown
# at that moment, so that the test sees each step the page shows, however quickly one follows another.
RECORD_PROGRESS = """
if (!window.progressLog) {
  window.progressLog = [];
  const resultNow = () => { const img = document.querySelector('.ar-result img'); return img ? img.src : null; };
  const note = (bar) => window.progressLog.push([bar.value, bar.max, resultNow()]);
  for (const name of ['value', 'max']) {
    const d = Object.getOwnPropertyDescriptor(HTMLProgressElement.prototype, name);
    Object.defineProperty(HTMLProgressElement.prototype, name, {configurable: true, enumerable: d.enumerable,
      get: d.get, set(v) { d.set.call(this, v); note(this); }});
  }
  new MutationObserver((changes) => changes.forEach((c) => note(c.target))).observe(document.body,
    {attributes: true, attributeFilter: ['value', 'max'], subtree: true});
}
window.progressLog.length = 0;
"""


ROW_SECONDS = 0.25  # a row of a completion on the server, in the tests below


@pytest.fixture
def ar_page(driver: Any, server: str, monkeypatch: pytest.MonkeyPatch) -> tuple[WebElement, list[int]]:
    """The PixelCNN's page, recording its progress bar, and the rows its completions draw on the server. The tiny
    model draws a row in a millisecond; here each row takes ROW_SECONDS, as on a real model, so that the stream
    arrives row by row and a Cancel lands halfway (the server's own code is unchanged: the wait is in the progress
    callback that it hands to the model)."""
    from genlab.registry import MODELS

    rows: list[int] = []
    family = MODELS.get("pixelcnn")
    complete = family.complete

    @functools.wraps(complete)
    def slow_complete(self: Any, *args: Any, callback: Callable[[int, int], bool] | None = None,
                      **kwargs: Any) -> Any:
        def slow(done: int, total: int) -> bool:
            time.sleep(ROW_SECONDS)
            rows.append(done)
            return callback(done, total)

        return complete(self, *args, callback=slow if callback else None, **kwargs)

    monkeypatch.setattr(family, "complete", slow_complete)
    open_page(driver, f"{server}/?run={RUN_ID['pixelcnn']}")
    driver.execute_script(RECORD_PROGRESS)
    return view(driver, RUN_ID["pixelcnn"]), rows



def test_completion_progress_advances_and_keeps_the_given_pixels(driver: Any, server: str,
                                                                   ar_page: tuple[WebElement, list[int]]) -> None:
    page, rows = ar_page
    index = 3  # a click in the strip picks the test image to complete
    page.find_element(By.CSS_SELECTOR, f'.test-strip img[data-index="{index}"]').click()
    hide = 0.5
    type_into(page.find_element(By.CSS_SELECTOR, ".ar-hide"), str(hide))
    before = src(page, ".ar-result img")
    page.find_element(By.CSS_SELECTOR, ".ar-complete").click()
    bar = page.find_element(By.CSS_SELECTOR, "progress.ar-progress")
    # the bar as the test sees it while the rows stream in, and every value the page gave it
    seen = wait(driver, lambda _: 0 < float(bar.get_attribute("value")) < float(bar.get_attribute("max")))
    assert seen
    result = changed_image(driver, page, ".ar-result img", before)
    log = driver.execute_script("return window.progressLog")
    steps = [value for value, top, shown in log if shown == before and 0 < value < top]
    assert steps == sorted(steps) and len(set(steps)) == len(rows) - 1, (log, rows)  # one step per row but the last
    assert float(bar.get_attribute("value")) == float(bar.get_attribute("max"))

    given = pixels(api(server, f"/api/runs/{RUN_ID['pixelcnn']}/test-images?offset={index}&count=1")
                   ["images"][0]["image"])
    assert result.shape == given.shape
    kept_rows = given.shape[0] - round(given.shape[0] * hide)
    assert kept_rows > 0
    np.testing.assert_array_equal(result[:kept_rows], given[:kept_rows])
    assert problems(driver) == []


def test_cancel_stops_a_completion(driver: Any, server: str, ar_page: tuple[WebElement, list[int]]) -> None:
    page, rows = ar_page
    type_into(page.find_element(By.CSS_SELECTOR, ".ar-hide"), "0.9")
    before = src(page, ".ar-result img")
    page.find_element(By.CSS_SELECTOR, ".ar-complete").click()
    bar = page.find_element(By.CSS_SELECTOR, "progress.ar-progress")
    wait(driver, lambda _: 0 < float(bar.get_attribute("value")) < float(bar.get_attribute("max")))
    page.find_element(By.CSS_SELECTOR, ".ar-cancel").click()
    stopped_at, drawn = bar.get_attribute("value"), len(rows)
    total = round(8 * 0.9)  # the rows a whole completion of the 8x8 digits draws
    time.sleep(ROW_SECONDS * (total + 2))  # longer than the rest of the drawing would take
    assert len(rows) <= drawn + 1 < total, rows  # the server stopped within a row
    assert src(page, ".ar-result img") == before
    assert bar.get_attribute("value") == stopped_at
    status = driver.find_element(By.ID, "status").text
    assert not status.startswith("error"), status
    assert problems(driver) == []  # a cancelled request is not a failed one

    page.find_element(By.CSS_SELECTOR, ".ar-complete").click()  # and the page still completes after a cancel
    changed_image(driver, page, ".ar-result img", before)
    assert problems(driver) == []


# --- text ---

def test_text_interpolation_shows_the_two_lines_at_its_ends(driver: Any, server: str) -> None:
    # the fixture's poem VAE reconstructs the corpus' first two lines exactly
    first, last = TINY_POEMS[0], TINY_POEMS[1]
    open_page(driver, f"{server}/?run={RUN_ID['text']}")
    page = view(driver, RUN_ID["text"])
    type_into(page.find_element(By.CSS_SELECTOR, ".text-first"), first)
    type_into(page.find_element(By.CSS_SELECTOR, ".text-last"), last)
    type_into(page.find_element(By.CSS_SELECTOR, ".text-steps"), "5")
    page.find_element(By.CSS_SELECTOR, ".text-interp-go").click()
    lines = wait(driver, lambda _: [li.text for li in page.find_elements(By.CSS_SELECTOR, ".text-interp li")]
                 if len(page.find_elements(By.CSS_SELECTOR, ".text-interp li")) == 5 else False)
    assert lines[0].strip() == first and lines[-1].strip() == last, lines

    # a character outside the vocabulary is shown as such
    type_into(page.find_element(By.CSS_SELECTOR, ".text-first"), first.replace(first[2], "龍"))  # not in the corpus
    page.find_element(By.CSS_SELECTOR, ".text-interp-go").click()
    wait(driver, lambda _: "龍" in [u.text for u in page.find_elements(By.CSS_SELECTOR, ".unk")])
    assert problems(driver) == []


# --- the README's screenshot ---

def _screenshot(driver: Any, limit: int = 150_000) -> None:
    """Save the page to $GENLAB_SCREENSHOT_DIR/explorer.png when that is set: a palette PNG, shrunk
    until it is at most ``limit`` bytes."""
    folder = os.environ.get("GENLAB_SCREENSHOT_DIR")
    if not folder:
        return
    with Image.open(io.BytesIO(driver.get_screenshot_as_png())) as shot:
        image = shot.convert("RGB")
    while True:
        buffer = io.BytesIO()
        image.quantize(colors=256).save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= limit or image.width < 320:
            break
        image = image.resize((image.width * 4 // 5, image.height * 4 // 5), Image.LANCZOS)
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "explorer.png").write_bytes(buffer.getvalue())
