"""The HTML viewer in a real browser: Debian's Chromium driven by Playwright, every network request
refused. Skipped where Chromium or Playwright is missing (.ci/run installs both)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from attnkit.runs import open_run
from attnkit.viz.explain import explain

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def _open(browser, page_path: Path):
    """The page loaded from file://, with every request that is not the file itself refused."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors, requests = [], []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))

    def refuse(route):
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            route.abort()

    page.route("**/*", refuse)
    page.goto(page_path.as_uri())
    page.wait_for_selector("#step-table")
    return page, errors, requests


def _pixels(page) -> str:
    return page.evaluate("document.getElementById('matrix').toDataURL()")


@pytest.fixture
def classifier_page(copy_run, tmp_path):
    explanation = explain(open_run(copy_run("classify")), "goal match team striker cup stock")
    path = tmp_path / "attention.html"
    explanation.to_html(path)
    return explanation, path


def test_viewer_works_offline_and_shows_the_captured_numbers(browser, classifier_page, tmp_path):
    explanation, path = classifier_page
    page, errors, requests = _open(browser, path)
    assert all(url.startswith(("file:", "data:")) for url in requests), requests

    # The step-by-step panel recomputes softmax(q k^T / sqrt(d_k) + mask) from the checkpoint's q and k.
    step = explanation.step
    view = next(m for m in explanation.maps if m.module == step["module"])
    softmax = [float(x) for x in page.locator("#step-table td.softmax").all_inner_texts()]
    assert softmax == pytest.approx(view.weights[0, 0].tolist(), abs=1e-3)

    # Clicking another head redraws the matrix.
    before = _pixels(page)
    page.click("canvas.thumb[data-map='0'][data-head='1']")
    assert _pixels(page) != before

    # Pointing at a cell shows the weight stored for it.
    box = page.locator("#matrix").bounding_box()
    rows, cols = view.weights.shape[1:]
    i, j = rows - 1, 1
    page.mouse.move(box["x"] + (j + 0.5) * box["width"] / cols, box["y"] + (i + 0.5) * box["height"] / rows)
    readout = page.inner_text("#readout")
    expected = float(explanation.maps[0].weights[1, i, j].to(torch.float16))
    assert readout.startswith(f"query {i} ") and float(readout.rsplit(": ", 1)[1]) == pytest.approx(expected, abs=1e-4)

    # Choosing a query in the head view moves the step-by-step panel to it.
    page.click(f"#heads span[data-query='{i}']")
    assert f"query {i} " in page.inner_text("#step h3")
    page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
    assert not errors, errors


def test_vision_viewer_draws_the_image_overlay(browser, copy_run, tmp_path):
    explanation = explain(open_run(copy_run("vision")), "tests/fixtures/runs/data/vision/test/vertical/0.png")
    path = tmp_path / "vision.html"
    explanation.to_html(path)
    page, errors, requests = _open(browser, path)
    page.wait_for_function("document.getElementById('overlay') !== null")
    drawn = page.evaluate(
        "(() => { const c = document.getElementById('overlay');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; })()"
    )
    assert drawn > 0
    assert not errors, errors
    assert all(url.startswith(("file:", "data:")) for url in requests), requests


def test_size_budget_of_a_128_token_six_layer_eight_head_page(tmp_path):
    """The issue's budget: a 128-token text through a 6-layer, 8-head model in at most 3 MB."""
    from attnkit.viz.explain import Explanation, MapView
    from attnkit.viz.html import render

    torch.manual_seed(0)
    maps = [
        MapView(f"encoder.layers.{layer}.self_attn", "self", layer, torch.rand(8, 128, 128).softmax(-1))
        for layer in range(6)
    ]
    qkv = {name: torch.randn(8, 128, 64) for name in ("q", "k", "v")}
    step = {"module": maps[-1].module, **qkv, "keep": torch.ones(128, 128, dtype=torch.bool)}
    tokens = [f"t{i}" for i in range(128)]
    page = render(Explanation("classify", tokens, {"label": "x"}, maps, 0.0, step=step))
    assert len(page.encode()) <= 3 * 1024 * 1024
