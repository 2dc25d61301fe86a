"""The dashboard in a real browser: every page through the sidebar, a search upload, the epoch
slider, switching runs in the pooling comparison; a screenshot per page, page-switch timings.

One server and one browser page serve the whole module (fixtures in conftest.py); each test
opens its page itself, so any test also runs alone. The pages look at the demo run esnet-p
(picked in the sidebar), whose embeddings the suite's cache usually holds already.
Screenshots and timings go to .cache/screenshots/ (<page>.png, timings.json).
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import DEMO_RUNS, SCREENSHOTS

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

RUN = "esnet-p"
VIEWPORT = {"width": 1440, "height": 900}
PAGE_MS = 90_000  # a run page's first view (the first script run imports torch: ~20 s on a busy CPU)
MODEL_MS = 240_000  # a model page's first view: evaluates the checkpoint, embeds the demo gallery if uncached
RERUN_MS = 60_000  # a widget change on a page already shown
WARM_SWITCH_S = 20.0  # a second visit: model and gallery are cached (st.cache_resource); ~1-5 s on a busy 2-core CPU

Key = Callable[[Page], Locator]


def _caption(text: str | re.Pattern) -> Key:
    return lambda p: p.get_by_test_id("stImageCaption").filter(has_text=text).first


def _metric(label: str) -> Key:
    return lambda p: p.get_by_test_id("stMetricLabel").filter(has_text=label).first


def _heading(name: str | re.Pattern) -> Key:
    return lambda p: p.get_by_role("heading", name=name).first


# Sidebar title -> (screenshot name, the element that shows the page is drawn, first-view timeout ms).
# Each key element comes late in its page's script, after the page's slow work.
PAGES: dict[str, tuple[str, Key, int]] = {
    "Runs": ("runs", _heading("Demo dataset"), PAGE_MS),
    "Training monitor": ("monitor", _metric("Best R1"), PAGE_MS),
    "Erasing inspector": ("erasing", _caption("CAM at epoch"), PAGE_MS),
    "Pooling comparison": ("pooling", _metric("Max pooling"), PAGE_MS),
    "Rank browser": ("rank_browser", _caption("match: what drives the similarity"), MODEL_MS),
    "Embedding explorer": ("embeddings", _heading(re.compile(r"nearest neighbours")), MODEL_MS),
    "Search": ("search", lambda p: p.get_by_test_id("stAlertContentInfo").filter(
        has_text="Upload one or more query images").first, MODEL_MS),
    "Evaluate": ("evaluate", lambda p: p.get_by_test_id("stDownloadButton").first, MODEL_MS),
    # with two checkpoints: evaluates both, then measures both CAMs on the queries; with one: a sentence
    "Baseline vs ES-Net": ("compare", lambda p: p.get_by_text(
        re.compile("paired bootstrap interval|Comparing needs two runs with a checkpoint")).first, 2 * MODEL_MS),
}


# --- helpers ------------------------------------------------------------------------------------
def _exceptions(page: Page) -> Locator:
    return page.get_by_test_id("stException")


def _settle(page: Page, timeout_ms: int = RERUN_MS) -> None:
    """Wait until the script run has finished (Streamlit marks the app ``notRunning``)."""
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=timeout_ms)


def _assert_no_exception(page: Page) -> None:
    if _exceptions(page).count():
        pytest.fail(f"Streamlit exception on the page:\n{_exceptions(page).first.inner_text()}", pytrace=False)


def _wait_for(page: Page, key: Locator, timeout_ms: int) -> None:
    """Wait for ``key`` to be visible; fail at once, with the message, if an exception or error box shows first."""
    problem = _exceptions(page).or_(page.get_by_test_id("stAlertContentError")).first
    expect(key.or_(problem).first).to_be_visible(timeout=timeout_ms)
    if key.is_visible():
        return
    if problem.is_visible():
        pytest.fail(f"the page shows an error instead of its content:\n{problem.inner_text()}", pytrace=False)
    expect(key).to_be_visible(timeout=timeout_ms)  # it showed, then the page redrew: wait for it again


def _visit(page: Page, title: str, visited: dict[str, float]) -> float:
    """Click ``title`` in the sidebar navigation; seconds until the page's key element is visible.

    Then waits for the script run to end, checks that no exception box shows and saves a screenshot.
    The first visit's seconds are kept in ``visited``.
    """
    shot, key, first_ms = PAGES[title]
    link = page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True)
    start = time.perf_counter()
    link.click()
    _wait_for(page, key(page), first_ms if title not in visited else RERUN_MS)
    seconds = time.perf_counter() - start
    visited.setdefault(title, round(seconds, 2))
    _settle(page, first_ms)
    _assert_no_exception(page)
    _screenshot(page, shot)
    return seconds


def _screenshot(page: Page, name: str) -> None:
    """The whole page (the main block scrolls inside the viewport, so the viewport is stretched to fit)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], [data-testid=stAppViewContainer]')]"
        ".map(e => e.scrollHeight), document.documentElement.scrollHeight)")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(int(height), VIEWPORT["height"]), 6000)})
    try:
        page.wait_for_timeout(300)  # let charts re-layout to the new size
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    finally:
        page.set_viewport_size(VIEWPORT)


def _grid_column(grid: Locator, col: int = 1) -> list[str]:
    """The texts of column ``col`` (1-based) of an st.dataframe, from the grid's accessible table."""
    return [t.strip() for t in grid.locator(f'td[role="gridcell"][aria-colindex="{col}"]').all_text_contents()]


def _select_run(page: Page, run: str) -> None:
    """Point the sidebar's "Run" select box (a combobox of ``"<run> (<state>)"``) at ``run``."""
    box = page.get_by_test_id("stSidebar").get_by_role("combobox", name="Run", exact=True)
    expect(box).to_be_visible(timeout=PAGE_MS)
    if box.input_value().startswith(f"{run} ("):
        return
    box.click()
    page.get_by_role("option", name=re.compile(rf"^{re.escape(run)} \(")).click()
    expect(box).to_have_value(re.compile(rf"^{re.escape(run)} \("), timeout=RERUN_MS)
    _settle(page, PAGE_MS)


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def visited() -> dict[str, float]:
    """Sidebar title -> seconds of its first view, for the pages shown in this module's browser page."""
    return {}


@pytest.fixture(scope="module")
def app(browser: Any, dashboard: str, timings: dict[str, Any], visited: dict[str, float]) -> Iterator[Page]:
    """One browser page on the dashboard (it opens on Runs), its sidebar pointed at the demo run ``RUN``."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    start = time.perf_counter()
    page.goto(dashboard)
    _wait_for(page, PAGES["Runs"][1](page), PAGE_MS)
    timings["first_load_s"] = visited["Runs"] = round(time.perf_counter() - start, 2)
    _settle(page, PAGE_MS)
    _select_run(page, RUN)
    try:
        yield page
    finally:
        context.close()


# --- the pages ----------------------------------------------------------------------------------
def test_runs_page_lists_the_demo_runs_and_every_page(app: Page, visited: dict[str, float]) -> None:
    _visit(app, "Runs", visited)
    nav = app.get_by_test_id("stSidebarNav").get_by_role("link")
    assert [t.split("\n")[-1].strip() for t in nav.all_inner_texts()] == list(PAGES)  # "<icon>\n\n<title>"
    runs = _grid_column(app.get_by_test_id("stDataFrame").first)
    assert RUN in runs, runs
    expect(app.get_by_role("heading", name=re.compile("esnet: Erasing Salient Parts"))).to_be_visible()


def test_training_monitor_draws_the_curves(app: Page, visited: dict[str, float]) -> None:
    _visit(app, "Training monitor", visited)
    expect(app.get_by_role("heading", name=re.compile(f"Training monitor · {RUN}"))).to_be_visible()
    expect(app.get_by_test_id("stPlotlyChart")).to_have_count(6)
    expect(app.get_by_test_id("stMetricValue")).to_have_count(5)


def test_erasing_inspector_epoch_slider_moves_the_epoch(app: Page, visited: dict[str, float]) -> None:
    _visit(app, "Erasing inspector", visited)
    slider = app.get_by_test_id("stSlider").filter(has_text="Epoch (0 = before training)")
    thumb = slider.get_by_role("slider", name="Epoch (0 = before training)")
    cam = app.get_by_test_id("stImage").filter(has=app.get_by_test_id("stImageCaption").filter(
        has_text="CAM at epoch")).first
    caption = cam.get_by_test_id("stImageCaption")
    last = int(re.search(r"CAM at epoch (\d+)", caption.inner_text()).group(1))
    assert last > 1, f"the demo run should have several probe epochs, the slider starts at {last}"
    src_last = cam.locator("img").get_attribute("src")

    thumb.focus()
    for key, epoch in (("Home", 0), ("ArrowRight", 1), ("End", last)):
        thumb.press(key)
        expect(caption).to_have_text(f"CAM at epoch {epoch}", timeout=RERUN_MS)
        expect(slider.get_by_test_id("stSliderThumbValue")).to_have_text(str(epoch))
        if epoch == 0:
            _settle(app)
            assert cam.locator("img").get_attribute("src") != src_last, "the CAM image did not change with the epoch"
    _settle(app)
    _assert_no_exception(app)

    # A baseline run has no erasing branch: the page says what its outlined block means.
    _select_run(app, "baseline-avg")
    try:
        expect(app.get_by_test_id("stAlertContentInfo").filter(has_text="This run has no erasing branch")
               ).to_be_visible(timeout=RERUN_MS)
        _assert_no_exception(app)
        _screenshot(app, "erasing_baseline")
    finally:
        _select_run(app, RUN)


def test_pooling_comparison_switches_runs(app: Page, visited: dict[str, float]) -> None:
    _visit(app, "Pooling comparison", visited)
    chooser = app.get_by_test_id("stMultiSelect").filter(has_text="Runs to compare")
    table = app.get_by_test_id("stDataFrame").first
    rows = table.locator('td[role="gridcell"][aria-colindex="1"]')
    before = _grid_column(table)
    chips = [t.get_attribute("aria-label") for t in chooser.locator("[data-tag]").all()]
    assert before and chips == before, (chips, before)

    removed = before[-1]
    chooser.get_by_role("button", name=f"Remove {removed}", exact=True).click()
    if len(before) > 1:
        expect(rows).to_have_count(len(before) - 1, timeout=RERUN_MS)
        assert _grid_column(table) == before[:-1]
    else:
        expect(app.get_by_test_id("stAlertContentInfo").filter(has_text="Choose one or more runs")).to_be_visible(
            timeout=RERUN_MS)
    _settle(app)

    chooser.get_by_role("combobox", name="Runs to compare").click()
    options = [o.strip() for o in app.get_by_role("option").all_inner_texts() if o.strip() != "Select all"]
    added = next((o for o in options if o not in before), removed)  # a run not compared before, if any
    app.get_by_role("option", name=added, exact=True).click()
    app.keyboard.press("Escape")
    table = app.get_by_test_id("stDataFrame").first
    expect(table.locator('td[role="gridcell"][aria-colindex="1"]', has_text=re.compile(
        rf"^{re.escape(added)}$"))).to_have_count(1, timeout=RERUN_MS)
    _settle(app)
    after = _grid_column(table)
    assert added in after and (after != before or added == removed), (before, after)
    _assert_no_exception(app)
    _screenshot(app, "pooling_switched")


def test_rank_browser_shows_a_ranked_gallery(app: Page, visited: dict[str, float]) -> None:
    _visit(app, "Rank browser", visited)
    hits = app.get_by_test_id("stImageCaption").filter(has_text=re.compile(r"^#\d+ [✓✗]"))
    ranks = [int(re.match(r"#(\d+)", t).group(1)) for t in hits.all_inner_texts()]
    assert len(ranks) >= 5 and ranks == sorted(ranks), ranks
    expect(app.get_by_test_id("stImageCaption").filter(has_text=re.compile(r"^query"))).not_to_have_count(0)


def test_embedding_explorer_first_view(app: Page, visited: dict[str, float]) -> None:
    _visit(app, "Embedding explorer", visited)
    expect(app.get_by_test_id("stPlotlyChart")).to_have_count(1)
    neighbours = app.get_by_test_id("stImageCaption").filter(has_text=re.compile(r"^d="))
    expect(neighbours).to_have_count(8)  # the "Neighbours" slider's default
    expect(app.get_by_test_id("stImageCaption").filter(has_text=re.compile(r"^picked"))).to_have_count(1)


def test_search_ranks_an_upload_and_reports_a_corrupt_one(app: Page, visited: dict[str, float],
                                                          demo_data: Path) -> None:
    _visit(app, "Search", visited)
    query = sorted((demo_data / "query").glob("*.jpg"))[0]
    upload = app.get_by_test_id("stFileUploaderDropzoneInput")
    upload.set_input_files(query)
    hits = app.get_by_test_id("stImageCaption").filter(has_text=re.compile(r"^#\d+ d="))
    _wait_for(app, hits.nth(4), MODEL_MS)  # the gallery is embedded and indexed on the first search
    _settle(app, MODEL_MS)
    _assert_no_exception(app)
    ranks = [int(re.match(r"#(\d+)", t).group(1)) for t in hits.all_inner_texts()]
    assert ranks == list(range(1, len(ranks) + 1)) and len(ranks) >= 5, ranks
    expect(app.get_by_test_id("stImageCaption").filter(has_text=query.name)).to_have_count(1)
    _screenshot(app, "search_results")

    upload.set_input_files(files=[{"name": "corrupt.jpg", "mimeType": "image/jpeg",
                                   "buffer": b"\xff\xd8\xff\xe0 this JPEG stops here"}])
    error = app.get_by_test_id("stAlertContentError").filter(has_text="corrupt.jpg")
    expect(error).to_be_visible(timeout=RERUN_MS)
    expect(error).to_contain_text("Skipped an upload")
    _settle(app)
    _assert_no_exception(app)
    assert hits.count() >= 5  # the readable upload's results stay
    _screenshot(app, "search_corrupt")

    # Remove both uploads so later visits of the page show its empty state again.
    delete = app.get_by_test_id("stFileChipDeleteBtn")
    while delete.count():
        delete.first.click()
        _settle(app)
    expect(app.get_by_test_id("stAlertContentError")).to_have_count(0, timeout=RERUN_MS)


def test_evaluate_shows_metrics_and_curves(app: Page, visited: dict[str, float]) -> None:
    _visit(app, "Evaluate", visited)
    headers = app.get_by_test_id("stDataFrame").first.locator('th[role="columnheader"]').all_text_contents()
    assert {"R1 (%)", "mAP (%)", "mINP (%)"} <= set(headers), headers
    expect(app.get_by_test_id("stPlotlyChart")).to_have_count(2)
    expect(app.get_by_role("heading", name=re.compile("Per-query results"))).to_be_visible()


def test_compare_shows_delta_ap_rankings_and_attention_spread(app: Page, visited: dict[str, float]) -> None:
    _visit(app, "Baseline vs ES-Net", visited)
    checkpoints = sorted(DEMO_RUNS.glob("*/checkpoints/last.pt"))
    if len(checkpoints) < 2:  # the embedded demo ships one trained run: the page says what it needs
        expect(app.get_by_test_id("stAlertContentInfo").filter(has_text="Comparing needs two runs")).to_be_visible()
        return
    expect(app.get_by_test_id("stMetricLabel").filter(has_text="mean ΔAP")).to_be_visible()
    expect(app.get_by_test_id("stPlotlyChart")).to_have_count(2)  # ΔAP histogram + attention spread
    expect(app.get_by_test_id("stImageCaption").filter(has_text="true match").first).to_be_visible()


# --- timings (printed and written; the warm switch bounded) ---------------------------------------
def test_warm_page_switch_times(app: Page, visited: dict[str, float], timings: dict[str, Any],
                                record_property: Callable[[str, object], None]) -> None:
    """Second visit of every page: click in the sidebar -> key element visible within ``WARM_SWITCH_S`` seconds.

    The bound is generous (the machine is shared); it catches a page that redoes its slow work
    (re-embedding, reloading the checkpoint) on every visit instead of reading the caches."""
    for title in PAGES:
        if title not in visited:  # this test runs alone: show the page once first
            _visit(app, title, visited)
    warm = {title: round(_visit(app, title, visited), 2) for title in PAGES}
    timings.update(first_view_s=dict(visited), warm_switch_s=warm, embedding_explorer={
        "first_view_s": visited["Embedding explorer"], "repeated_view_s": warm["Embedding explorer"]})
    _visit(app, "Runs", visited)  # end where the dashboard opens, so runs.png shows the landing page
    lines = [f"first load of the dashboard: {timings['first_load_s']:.2f} s",
             *(f"{t:<20} first view {visited[t]:6.2f} s · warm switch {warm[t]:5.2f} s" for t in PAGES)]
    record_property("browser_timings", "\n".join(lines))  # printed in the terminal summary (tests/conftest.py)
    print("\n".join(lines))
    slow = {t: s for t, s in warm.items() if s > WARM_SWITCH_S}
    assert not slow, f"warm page switches over {WARM_SWITCH_S:.0f} s: {slow}"


def test_two_sessions_search_at_once_without_interfering(browser: Any, dashboard: str, demo_data: Path,
                                                         demo_checkpoint: Path, embedding_cache: Path) -> None:
    """Two browser sessions share the cached model and gallery; uploads sent back to back each get their own ranking."""
    from esnet import api

    queries = sorted((demo_data / "query").glob("*.jpg"))
    first = queries[0]
    second = next(q for q in queries if q.name[:4] != first.name[:4])  # another identity
    inf = api.load_inference(demo_checkpoint, device="cpu")
    gallery = api.load_gallery(inf, dataset="demo", root=demo_data, cache_dir=embedding_cache)
    expected = {q.name: int(api.search_images(inf, gallery, [api.read_image(q)], topk=1).pids[0, 0])
                for q in (first, second)}

    contexts = [browser.new_context(viewport=VIEWPORT) for _ in range(2)]
    try:
        pages = [c.new_page() for c in contexts]
        for page in pages:
            page.goto(dashboard)
            _wait_for(page, PAGES["Runs"][1](page), PAGE_MS)
            _settle(page, PAGE_MS)
            _select_run(page, RUN)
            _visit(page, "Search", {})
        for page, query in zip(pages, (first, second)):  # no wait in between: both sessions search at once
            page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(query)
        for page, query in zip(pages, (first, second)):
            hits = page.get_by_test_id("stImageCaption").filter(has_text=re.compile(r"^#\d+ d="))
            _wait_for(page, hits.nth(4), MODEL_MS)
            _settle(page, MODEL_MS)
            _assert_no_exception(page)
            captions = page.get_by_test_id("stImageCaption").all_inner_texts()
            assert any(query.name in c for c in captions) and not any(
                other.name in c for other in (first, second) if other != query for c in captions), captions
            top = re.search(r"id (\d+)", hits.first.inner_text()).group(1)
            assert int(top) == expected[query.name], (query.name, hits.first.inner_text(), expected)
    finally:
        for c in contexts:
            c.close()
