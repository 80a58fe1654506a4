"""The bridge's playground (GET /) and API docs (GET /docs) in a real headless Chromium.

Debian's chromium, driven by Playwright; `make test-deps` installs both. Set PLAYGROUND_SCREENSHOT
to a path to keep the screenshot (`make screenshot` writes docs/playground.png with it)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from clip_grpc.config import DEMO_MODEL_DIR
from clip_grpc.model.loading import load_model
from clip_grpc.server import running_server
from tests.conftest import server_config
from tests.rest_helpers import running_bridge

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# As the machine notes say: without the background-networking flags Chromium tries to reach
# outside hosts at start; this machine (and CI) must only ever see loopback traffic.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
RED_CIRCLE, YELLOW_STAR = "a photo of a red circle", "a photo of a yellow star"
WRONG = "a photo of a blue square"
MATCHING = {"red_circle.png": RED_CIRCLE, "yellow_star.jpg": YELLOW_STAR}


@pytest.fixture(scope="module")
async def demo_bridge():
    loaded = load_model(DEMO_MODEL_DIR, device="cpu", dtype="fp32")
    async with running_server(server_config(""), loaded=loaded) as server:
        async with running_bridge(server.target) as bridge:
            bridge.server_target = server.target
            yield bridge


@pytest.fixture(scope="module")
async def browser():
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: run `make test-deps`"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser):
    context = await browser.new_context(viewport={"width": 1100, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(60_000)  # a loaded 2-core CI machine
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    yield page
    await context.close()


def only_loopback(urls: list[str], base_url: str) -> None:
    outside = [url for url in urls if not url.startswith((base_url, "data:", "blob:"))]
    assert not outside, f"the page reached outside the bridge: {outside}"


async def test_playground_ranks_each_image_s_caption_first_with_the_api_s_scores(
    demo_bridge, page, tmp_path
):
    ranked = []  # the /v1/rank answers the page received, to compare with what it shows

    async def keep_rank_answer(response):
        if response.url.endswith("/v1/rank"):
            ranked.append(await response.json())

    page.on("response", keep_rank_answer)
    await page.goto(demo_bridge.url("/"))
    # Locator waits, not wait_for_function: the page's CSP forbids the eval that one needs.
    await expect(page.locator("#model")).to_have_text(re.compile("^Model "), timeout=60_000)
    assert "64-d" in await page.text_content("#model")  # the demo model's dimension

    await page.set_input_files("#images", [str(EXAMPLES / name) for name in MATCHING])
    await page.fill("#captions", f"{WRONG}\n{RED_CIRCLE}\n{YELLOW_STAR}")
    await page.click("#compare")
    await expect(page.locator(".card .candidate")).to_have_count(6, timeout=60_000)

    assert await page.is_hidden("#error")
    captions = [WRONG, RED_CIRCLE, YELLOW_STAR]
    answers = {answer["queryId"]: answer for answer in ranked}
    assert set(answers) == set(MATCHING)
    for image, matching in MATCHING.items():
        card = page.locator(f'.card[data-image="{image}"]')
        rows = card.locator(".candidate")
        assert await rows.count() == 3
        shown_order = [await rows.nth(i).get_attribute("data-caption") for i in range(3)]
        assert shown_order[0] == matching, (image, shown_order)
        api = answers[image]["candidates"]
        assert shown_order == [captions[candidate["index"]] for candidate in api]
        for i, candidate in enumerate(api):
            row = rows.nth(i)
            assert int(await row.locator(".score").text_content()) == candidate["score"]
            cosine = float(await row.locator(".cosine").text_content())
            assert abs(cosine - candidate["cosine"]) <= 0.0005 + 1e-9
            probability = float((await row.locator(".probability").text_content()).rstrip("%"))
            assert abs(probability - 100 * candidate["probability"]) <= 0.05 + 1e-9
        assert "ms" in await card.locator(".timing").text_content()

    screenshot = Path(os.environ.get("PLAYGROUND_SCREENSHOT") or tmp_path / "playground.png")
    await page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    only_loopback(page.requested, demo_bridge.base_url)


async def test_a_file_that_is_no_image_shows_a_clear_error_and_the_others_still_rank(
    demo_bridge, page, tmp_path
):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a picture")
    await page.goto(demo_bridge.url("/"))
    await page.set_input_files("#images", [str(broken), str(EXAMPLES / "red_circle.png")])
    await page.fill("#captions", f"{RED_CIRCLE}\n{WRONG}")
    await page.click("#compare")
    await expect(page.locator("#error")).to_contain_text("1 of 2 images failed", timeout=60_000)
    assert "400" in await page.text_content("#error")
    failed = page.locator('.card.failed[data-image="broken.png"] .error')
    assert "INVALID_ARGUMENT" in await failed.text_content()
    good = page.locator('.card[data-image="red_circle.png"] .candidate')
    assert await good.first.get_attribute("data-caption") == RED_CIRCLE


async def test_the_server_down_is_said_on_the_page(page, unused_tcp_port):
    async with running_bridge(f"127.0.0.1:{unused_tcp_port}") as bridge:
        await page.goto(bridge.url("/"))
        await expect(page.locator("#error")).to_contain_text("503", timeout=60_000)
        assert "not answering" in await page.text_content("#model")


async def test_docs_page_renders_every_route_of_the_openapi_document(demo_bridge, page):
    document = json.loads((await demo_bridge.get("/openapi.json")).body)
    await page.goto(demo_bridge.url("/docs"))
    await page.wait_for_selector(".opblock")
    shown = {
        await path.text_content()
        for path in await page.locator(".opblock-summary-path").all()
    }
    assert {path.replace("\u200b", "") for path in shown} == set(document["paths"])
    only_loopback(page.requested, demo_bridge.base_url)


async def test_pages_are_served_with_a_strict_content_security_policy(demo_bridge):
    for path in ("/", "/docs", "/static/playground.js", "/docs/assets/swagger-ui-bundle.js"):
        response = await demo_bridge.get(path)
        assert response.code == 200, path
        assert "script-src 'self'" in response.headers["Content-Security-Policy"], path
    assert (await demo_bridge.get("/static/../config.py")).code in (403, 404)
    for path, method in (("/static/absent.js", "GET"), ("/docs/assets/absent.css", "GET"),
                         ("/", "POST")):
        response = await demo_bridge.fetch(path, method=method, body=b"" if method == "POST"
                                           else None)
        assert response.code in (404, 405), path
        assert json.loads(response.body)["error"]["code"] in ("NOT_FOUND", "METHOD_NOT_ALLOWED")


async def test_a_bridge_with_api_keys_gets_the_key_asked_for_and_kept_in_the_tab(
    demo_bridge, page, tmp_path
):
    keys = tmp_path / "keys.txt"
    keys.write_text("playground-key\n")
    async with running_bridge(demo_bridge.server_target, api_key_file=str(keys)) as bridge:
        await page.goto(bridge.url("/"))
        await expect(page.locator("#api-key-section")).to_be_visible(timeout=60_000)
        await expect(page.locator("#error")).to_contain_text("API key", timeout=60_000)
        await page.fill("#api-key", "playground-key")
        await page.dispatch_event("#api-key", "change")
        await expect(page.locator("#model")).to_have_text(re.compile("^Model "), timeout=60_000)
        assert await page.evaluate("sessionStorage.getItem('clip-grpc-api-key')") == (
            "playground-key"
        )
        assert await page.evaluate("localStorage.length") == 0
