"""A fresh server's first session shows the router's pages, not a pages/ folder's file names.

In Streamlit 1.67 a ``pages/`` folder beside the entry script sets a class-wide flag
(``PagesManager.uses_pages_directory``) when the server starts, and only a script run that calls
``st.navigation`` clears it, so the very first session of a fresh server can come up in the legacy
folder mode: file names ("runs", "monitor", ...) in the sidebar. The entry is app/main.py and the
pages are in the top-level pages/, so no pages/ is beside it. This module has its own server
(the ``dashboard`` fixture is module-scoped) and opens exactly one session on it, first.
"""
from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

FIRST_VIEW_MS = 90_000  # the first script run imports torch: ~20 s on a busy CPU
# app/main.py's st.Page titles and their URL paths (the file names), in the router's order.
ROUTER = {"Runs": "", "Training monitor": "monitor", "Erasing inspector": "erasing",
          "Pooling comparison": "pooling", "Rank browser": "rank_browser", "Embedding explorer": "embeddings",
          "Search": "search", "Evaluate": "evaluate", "Baseline vs ES-Net": "compare"}


def test_first_session_of_a_fresh_server_shows_the_router_titles(browser: Any, dashboard: str) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        page = context.new_page()
        page.goto(dashboard)
        links = page.get_by_test_id("stSidebarNav").get_by_role("link")
        expect(links).to_have_count(len(ROUTER), timeout=FIRST_VIEW_MS)
        titles = [t.split("\n")[-1].strip() for t in links.all_inner_texts()]  # "<icon>\n\n<title>"
        assert titles == list(ROUTER), f"the sidebar shows {titles}, not the router's titles"
        hrefs = [h.rstrip("/").removeprefix(dashboard).strip("/") for h in
                 (links.nth(i).get_attribute("href") or "" for i in range(len(ROUTER)))]
        assert hrefs == list(ROUTER.values()), hrefs
        expect(page.get_by_role("heading", name="Demo dataset").first).to_be_visible(timeout=FIRST_VIEW_MS)
        expect(page.get_by_test_id("stException")).to_have_count(0)
    finally:
        context.close()
