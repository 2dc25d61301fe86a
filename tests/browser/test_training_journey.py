"""A new user's training journey in a real browser: start a short run from the Runs page form,
see it selected in the sidebar and live on the Training monitor, stop it, see ``stopped``, resume it.

The server of this module is its own (not conftest's ``dashboard``): its runs directory is empty,
runs started from the form go to a temporary user runs folder (``$ESNET_USER_RUNS_DIR``) and the
dataset is a 10-identity demo (5 training ids, 140 images), so an epoch takes seconds. A
screenshot of the monitor at the ``stopped`` step goes to .cache/screenshots/journey_stopped.png.
The trainer it starts is stopped (and waited for) whatever the test's outcome.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from esnet import api
from esnet.data.demo import generate_demo
from tests.browser.conftest import REPO, START_TIMEOUT_S, _free_port, _healthy, _stop
from tests.browser.test_dashboard_e2e import VIEWPORT, _screenshot, _settle

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

RUN = "journey"
EPOCHS = 100  # ~2 s an epoch here: far more than the test waits for, so it is still training when stopped
PAGE_MS = 90_000  # the first script run imports torch
TRAIN_MS = 120_000  # the trainer process starts (imports torch) and finishes its first epoch


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("journey")
    out = {"runs": base / "runs", "user_runs": base / "user_runs", "data": base / "demo10", "cache": base / "cache"}
    out["runs"].mkdir()
    generate_demo(out["data"], num_ids=10, seed=0)
    return out


@pytest.fixture(scope="module")
def server(folders: dict[str, Path]) -> Iterator[str]:
    """A dashboard on an empty runs directory whose form writes into ``folders["user_runs"]``."""
    env = {**os.environ, "ESNET_RUNS_DIR": str(folders["runs"]), "ESNET_USER_RUNS_DIR": str(folders["user_runs"]),
           "ESNET_DEMO_ROOT": str(folders["data"]), "ESNET_CACHE_DIR": str(folders["cache"])}
    log_path = folders["runs"].parent / "server.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline and not _healthy(url):
        time.sleep(0.25)
    if proc.poll() is not None or not _healthy(url):
        _stop(proc)
        pytest.fail(f"the dashboard did not start at {url}:\n{log_path.read_text(errors='replace')[-3000:]}",
                    pytrace=False)
    try:
        yield url
    finally:
        run_dir = folders["user_runs"] / RUN
        if run_dir.is_dir():  # never leave a trainer behind, whatever happened above: a resumed one may
            deadline = time.monotonic() + 120  # still be starting (stop_training signals running ones only)
            while api.run_status(run_dir).state == "starting" and time.monotonic() < deadline:
                time.sleep(0.5)
            api.stop_training(run_dir, timeout_s=60.0)
        _stop(proc)


def _sidebar_run(page: Page):
    return page.get_by_test_id("stSidebar").get_by_role("combobox", name="Run", exact=True)


def _nav(page: Page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()


def _field(form, label: str):
    """The form's input labelled ``label`` (its help button carries "Help for <label>")."""
    return form.locator(f'input[aria-label="{label}"]')


def _state_caption(page: Page, state: str):
    return page.get_by_test_id("stCaptionContainer").filter(has_text=re.compile(rf"\b{state}\b · updated")).first


def test_start_watch_stop_and_resume_a_run(browser: Any, server: str, folders: dict[str, Path]) -> None:
    start = time.perf_counter()
    page = browser.new_context(viewport=VIEWPORT).new_page()
    page.goto(server)
    form = page.get_by_test_id("stForm")
    expect(_field(form, "Run name")).to_be_visible(timeout=PAGE_MS)  # no runs yet: the form is open
    _settle(page, PAGE_MS)

    # Start: a tiny run (64x32, batch 8, no evaluation); warm-up and decays left empty (scaled).
    _field(form, "Run name").fill(RUN)
    for label, value in (("Epochs", str(EPOCHS)), ("Evaluate every", "0"), ("Batch", "8"),
                         ("Input size HxW", "64x32")):
        _field(form, label).fill(value)
    expect(_field(form, "Warm-up epochs")).to_have_value("")
    expect(_field(form, "Decay ×0.1 at epochs")).to_have_value("")
    form.get_by_role("button", name="Start training").click()
    expect(page.get_by_test_id("stAlertContentSuccess").filter(has_text=f"Started {RUN} (pid")).to_be_visible(
        timeout=PAGE_MS)
    expect(_sidebar_run(page)).to_have_value(re.compile(rf"^{RUN} \((starting|running)\)$"), timeout=PAGE_MS)
    assert (folders["user_runs"] / RUN / "train.log").is_file(), "the run is not in the user runs folder"
    assert not (folders["runs"] / RUN).exists()

    # Live on the Training monitor: running, and the epoch counter moves without a reload.
    _nav(page, "Training monitor")
    expect(page.get_by_role("heading", name=f"Training monitor · {RUN}")).to_be_visible(timeout=PAGE_MS)
    epoch = page.get_by_test_id("stMetric").filter(has_text="Epoch").get_by_test_id("stMetricValue")
    expect(epoch).to_have_text(re.compile(rf"^[1-9]\d*/{EPOCHS}$"), timeout=TRAIN_MS)  # last.pt exists now
    expect(_state_caption(page, "running")).to_be_visible()
    expect(_sidebar_run(page)).to_have_value(f"{RUN} (running)")

    # Stop it from the Runs page.
    _nav(page, "Runs")
    running = page.get_by_role("combobox", name="Running run", exact=True)
    expect(running).to_have_value(RUN, timeout=PAGE_MS)
    page.get_by_role("button", name="Stop training").click()
    expect(page.get_by_test_id("stAlertContentSuccess").filter(has_text=f"{RUN}: stopped")).to_be_visible(
        timeout=PAGE_MS)
    expect(_sidebar_run(page)).to_have_value(f"{RUN} (stopped)", timeout=PAGE_MS)  # still the selected run
    assert api.run_status(folders["user_runs"] / RUN).state == "stopped"

    _nav(page, "Training monitor")
    expect(_state_caption(page, "stopped")).to_be_visible(timeout=PAGE_MS)
    expect(page.get_by_test_id("stAlertContentInfo").filter(has_text="Stopped by you")).to_be_visible()
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)  # not a red "failed" box
    _settle(page)
    _screenshot(page, "journey_stopped")

    # Resume it.
    _nav(page, "Runs")
    expect(page.get_by_role("combobox", name="Stopped or failed run", exact=True)).to_have_value(RUN,
                                                                                               timeout=PAGE_MS)
    page.get_by_role("button", name="Resume training").click()
    expect(page.get_by_test_id("stAlertContentSuccess").filter(has_text=f"Resumed {RUN} (pid")).to_be_visible(
        timeout=PAGE_MS)
    expect(_sidebar_run(page)).to_have_value(re.compile(rf"^{RUN} \((starting|running)\)$"), timeout=PAGE_MS)
    print(f"journey: {time.perf_counter() - start:.1f} s")
