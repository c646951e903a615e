"""The local page (commands/app.py): its results are the API's, its errors are sentences, and it works in a real
browser (headless Chromium through Selenium; `.ci/run` installs them, and sets REQUIRE_BROWSER so that CI fails
instead of skipping where they are missing)."""
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from tiny import TINY
from commands.app import TEST_IMAGE, UPLOAD, Page
from model.masking import box_hole
from pipeline.config import ConfigError
from pipeline.inpainter import Inpainter

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
BROWSER = pytest.mark.skipif(not (CHROMIUM and DRIVER) and not os.environ.get("REQUIRE_BROWSER"),
                             reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")


@pytest.fixture
def page(tiny_project, monkeypatch, tmp_path):
    monkeypatch.chdir(tiny_project.root)
    test = tiny_project.path("data", "prepared", "test")
    return Page(Inpainter.load("models", *TINY), np.load(test / "gt.npy"), np.load(test / "mask64.npy"), tmp_path)


def settings(**changes):
    """Page.run's arguments for test serial 3, a box hole and square T=3 decoding, with `changes`."""
    values = {"source": TEST_IMAGE, "serial": 3, "upload": None, "kind": "box", "box": (10, 12, 30, 20),
              "pixels": 8, "editor": None, "schedule": "square", "T": 3, "sweet_spot": 0, "confidence": "lab",
              "order": "confidence"}
    return {**values, **changes}


def test_the_pages_result_for_a_test_serial_is_the_apis(page, tiny_project):
    shown = page.run(**settings())
    gt = np.load(tiny_project.path("data", "prepared", "test", "gt.npy"))
    api = page.model.inpaint(gt[3:4], box_hole(10, 12, 30, 20)[None], "square", 3, 0, keys=[3])
    for name in ("composite", "raw", "masked"):
        assert np.array_equal(getattr(shown, "input" if name == "masked" else name), getattr(api, name)[0]), name
    assert len(shown.frames) == 3 + 2 and Image.open(shown.animation).n_frames >= 2
    assert "3 iteration(s) of 3 (square" in shown.summary
    # the test image's own lab mask, and a painted hole: any painted pixel of a 4x4 block is a hole
    own = page.run(**settings(kind="the test image's own mask", schedule="cosine", T=2))
    mask64 = np.load(tiny_project.path("data", "prepared", "test", "mask64.npy"))
    assert np.array_equal(own.composite, page.model.inpaint(gt[3:4], (mask64[3:4] == 0), "cosine", 2, 0,
                                                            keys=[3]).composite[0])
    layer = np.zeros((256, 256, 4), np.uint8)
    layer[41, 100:103, 3] = 255  # canvas rows 40-43 are image row 10; columns 100-103 image column 25
    assert set(map(tuple, np.argwhere(Page.painted({"layers": [layer]})))) == {(10, 25)}


@pytest.mark.parametrize("changes, sentence", [
    ({"serial": 99}, "Serial 99 is out of range: the test set has 10 images (0 to 9)"),
    ({"T": 0}, "T is 0; expected a positive integer"),
    ({"T": 4, "sweet_spot": 6}, "expected a sweet spot from 0 to T=4"),
    ({"kind": "brush", "editor": {"layers": [np.zeros((256, 256, 4), np.uint8)]}}, "The brush hole is empty"),
    ({"box": (60, 60, 10, 10)}, "The box 60,60,10,10: outside the 64x64 image"),
    ({"source": UPLOAD}, "Upload an image first"),
    ({"source": UPLOAD, "upload": "NOTES"}, "The upload could not be used: not a decodable image"),
    ({"source": UPLOAD, "upload": "IMAGE", "kind": "the test image's own mask"}, "An upload has no mask of its own"),
])
def test_errors_on_the_page_are_sentences(page, tmp_path, changes, sentence):
    (tmp_path / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "image.png")
    upload = {"NOTES": str(tmp_path / "notes.txt"), "IMAGE": str(tmp_path / "image.png")}
    changes = {k: upload.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}
    with pytest.raises(ConfigError) as e:
        page.run(**settings(**changes))
    assert sentence in str(e.value)


def test_without_models_the_page_says_how_to_make_them(project):
    err = project.fails("commands.app")
    assert "models/vqgan/architecture.json not found: expected the trained models in models/ (train them with " \
           "`dvc repro`" in err and "Traceback" not in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetched(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=30) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))


@pytest.mark.slow
@BROWSER
def test_the_page_in_a_real_browser(tiny_project, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    cmd = [sys.executable, "-m", "commands.app", "--port", str(port)] + [a for o in TINY for a in ("-S", o)]
    server = subprocess.Popen(cmd, cwd=tiny_project.root, env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    options = Options()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    driver = None
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, server.stdout.read()
                time.sleep(0.5)
        driver = webdriver.Chrome(options=options, service=Service(DRIVER))
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#run"))

        def run_serial(serial: str) -> None:
            field = driver.find_element(By.CSS_SELECTOR, "#serial input")
            field.clear()
            field.send_keys(serial)
            driver.find_element(By.XPATH, "//*[@id='hole']//label[.//span[text()='box']]").click()
            driver.find_element(By.CSS_SELECTOR, "#run").click()

        run_serial("3")
        t0 = time.time()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#composite img"))
        wait.until(lambda d: "Decoded in" in d.find_element(By.CSS_SELECTOR, "#summary").text)
        print(f"from Run to the result shown: {time.time() - t0:.2f} s")
        composite = fetched(driver.find_element(By.CSS_SELECTOR, "#composite img").get_attribute("src"))[::4, ::4]
        gt = np.load(tiny_project.path("data", "prepared", "test", "gt.npy"))[3]
        known = ~box_hole(16, 16, 32, 32)  # the page's default box
        assert composite.shape == (64, 64, 3) and np.array_equal(composite[known], gt[known])
        assert driver.find_elements(By.CSS_SELECTOR, "#animation img") and driver.find_elements(By.CSS_SELECTOR,
                                                                                                "#frame img")
        driver.save_screenshot(str(tmp_path / "page.png"))
        run_serial("99")
        wait.until(lambda d: "Serial 99 is out of range" in d.find_element(By.CSS_SELECTOR, "#message").text)
        assert "Traceback" not in driver.find_element(By.TAG_NAME, "body").text
        driver.save_screenshot(str(tmp_path / "page_error.png"))
        assert Path(tmp_path / "page.png").stat().st_size > 10_000
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)
