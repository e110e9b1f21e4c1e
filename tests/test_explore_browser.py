"""The explorer's page in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by
Selenium through the system's chromedriver, against a real server on an ephemeral port.

It loads the page, checks the scatter has the split's points, hovers and clicks a point and sees its image, moves a
slider and sees the decoded image change to the decoder's mean at the new value (while the reconstruction stays),
picks a second point for the interpolation strip, and takes a screenshot. When the browser cannot be started the
test says why in one line: a skip here, a failure under ``CI=true`` (CI must run it; ``.ci/run`` installs it).

``PYRO_VAE_SCREENSHOT=docs/images/explore.png`` also saves the screenshot there (the docs' picture), of the model in
``PYRO_VAE_SCREENSHOT_CHECKPOINT`` when set (else the suite's small trained model).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from test_explore import serving

from pyro_vae import plots
from pyro_vae.errors import first_line
from pyro_vae.explorer import load_latent_space

pytestmark = pytest.mark.slow  # (it starts a browser)
POINTS = 400
WINDOW = (1300, 1250)
PICK_RADIUS = 7  # explore.js's


def unavailable(reason: str):
    """Skip with ``reason``, or fail with it under ``CI=true``."""
    message = f"the browser test cannot run: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (pip install -e '.[test]')")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        unavailable("chromium or chromedriver is not on PATH (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    try:
        found = webdriver.Chrome(options=options, service=Service(driver))
    except WebDriverException as exc:
        unavailable(f"headless Chromium did not start: {first_line(exc, 200)}")
    yield found
    found.quit()


@pytest.fixture(scope="module")
def space(trained, data_dir):
    checkpoint = os.environ.get("PYRO_VAE_SCREENSHOT_CHECKPOINT")
    if checkpoint:
        return load_latent_space(checkpoint, limit=2000, device="cpu")
    return load_latent_space(trained.checkpoint_path, data_dir=data_dir, limit=POINTS, device="cpu")


def wait_for(driver, script: str, *args, timeout: float = 30):
    """The first truthy value of ``script`` (JavaScript returning a value), polled; fails after ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.05)
    status = driver.execute_script("return document.getElementById('status').textContent")
    pytest.fail(f"timed out waiting for: {script} (page status: {status!r})")


PIXELS = """
const img = document.getElementById(arguments[0]);
const canvas = document.createElement('canvas');
canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
const context = canvas.getContext('2d');
context.drawImage(img, 0, 0);
return [canvas.height, canvas.width, Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data)];
"""


def shown(driver, element_id: str, channels: int) -> torch.Tensor:
    """The picture an <img> shows, at its own size, as levels ``(C, H, W)``."""
    height, width, rgba = driver.execute_script(PIXELS, element_id)
    return torch.tensor(rgba, dtype=torch.int16).reshape(height, width, 4)[..., :channels].permute(2, 0, 1)


def levels(pictures: torch.Tensor) -> torch.Tensor:
    return pictures.clamp(0, 1).mul(255).round().to(torch.int16)


def isolated_points(pixels: list[float], count: int = 2) -> list[int]:
    """Points with no other point within the page's pick radius (a click on one picks that one), the most isolated
    first."""
    xy = torch.tensor(pixels).reshape(-1, 2)
    distances = torch.cdist(xy, xy) + torch.eye(len(xy)) * 1e9
    nearest = distances.min(1).values
    order = nearest.argsort(descending=True)[:count]
    assert float(nearest[order[-1]]) > PICK_RADIUS
    return order.tolist()


def point_action(driver, canvas, index: int):
    """An action chain with the pointer over point ``index`` of the scatter."""
    from selenium.webdriver.common.action_chains import ActionChains

    x, y = driver.execute_script("return window.explore.pixelOf(arguments[0])", index)
    scale = canvas.size["width"] / int(canvas.get_attribute("width"))
    dx, dy = x * scale - canvas.size["width"] / 2, y * scale - canvas.size["height"] / 2
    return ActionChains(driver).move_to_element_with_offset(canvas, round(dx), round(dy))


def test_the_page_shows_the_space_and_decodes_live(browser, space, tmp_path):
    from selenium.webdriver.common.keys import Keys

    channels = space.vae.image_shape[0]
    with serving(space) as (host, port):
        browser.get(f"http://{host}:{port}/")
        points = wait_for(browser, "return document.getElementById('scatter').dataset.points")
        assert int(points) == space.count  # the scatter has the split's N points
        canvas = browser.find_element("id", "scatter")
        pixels = browser.execute_script("return Array.from(window.explore.state.pixels)")
        a, b = isolated_points(pixels)

        point_action(browser, canvas, b).perform()  # hovering shows the image
        wait_for(browser, "const h = document.getElementById('hover'); return !h.hidden && h.dataset.index")
        hover = browser.find_element("id", "hover")
        assert hover.get_attribute("data-index") == str(b) and browser.find_element("id", "hover-text").text.startswith(
            f"#{b},"
        )

        point_action(browser, canvas, a).click().perform()  # clicking selects it
        wait_for(browser, "return document.getElementById('selected-image').dataset.index === String(arguments[0])", a)
        wait_for(browser, "const p = window.explore.pictures; return p.decoded.shown >= 1 && window.explore.idle()")
        assert torch.equal(shown(browser, "selected-image", channels), levels(space.pictures[a].float() / 255))
        reconstruction = shown(browser, "reconstruction", channels)
        before = shown(browser, "decoded", channels)
        assert torch.equal(before, reconstruction)  # control: nothing moved yet, so the decoding is the reconstruction
        assert torch.equal(reconstruction, levels(plots.decode(space.vae, space.means[a][None])[0]))

        k = int(space.means[:, : space.latent_dims[0]].var(0).argmax())  # the most active coordinate
        slider = browser.find_element("css selector", f"#sliders input[data-coordinate='{k}']")
        shown_before = browser.execute_script("return window.explore.pictures.decoded.shown")
        upwards = float(space.means[a][k]) < float(space.low[k] + space.high[k]) / 2
        slider.send_keys(Keys.END if upwards else Keys.HOME)  # move the slider to the far end of its range
        wait_for(
            browser,
            "return window.explore.pictures.decoded.shown > arguments[0] && window.explore.idle()",
            shown_before,
        )
        after = shown(browser, "decoded", channels)
        z = space.means[a].clone()
        z[k] = float(slider.get_attribute("value"))
        assert abs(float(z[k]) - float(space.means[a][k])) > 1
        assert (after - before).abs().max() > 10  # the decoded image changed ...
        assert (after - levels(plots.decode(space.vae, z[None])[0])).abs().max() <= 1  # ... to the decoding at z
        assert torch.equal(shown(browser, "reconstruction", channels), reconstruction)  # control: that one stayed

        point_action(browser, canvas, b).key_down(Keys.SHIFT).click().key_up(Keys.SHIFT).perform()  # B
        wait_for(browser, "return window.explore.pictures.interpolation.shown >= 1 && window.explore.idle()")
        strip = shown(browser, "interpolation", channels)
        steps = int(browser.find_element("id", "steps").get_attribute("value"))
        assert strip.shape[-1] == steps * space.vae.image_shape[2]
        wait_for(browser, "return window.explore.pictures.samples.shown >= 1")
        assert browser.find_element("id", "status").text == ""  # no request failed

        point_action(browser, canvas, b).perform()
        wait_for(browser, "return !document.getElementById('hover').hidden")
        screenshot = tmp_path / "explore.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("PYRO_VAE_SCREENSHOT"):
            target = Path(os.environ["PYRO_VAE_SCREENSHOT"])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(screenshot, target)
