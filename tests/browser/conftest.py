"""Browser end-to-end fixtures: a real ``streamlit run`` server and a headless Chromium page.

The server runs the dashboard (app/main.py) on a free port of 127.0.0.1 in its own
process group, on the embedded demo runs (assets/demo_runs), the suite's demo data and the
suite's embedding cache (tests/conftest.py), so embeddings other tests computed are reused.
Fixtures are module-scoped: under pytest-xdist each worker that runs browser tests starts its
own server (``make test`` keeps them on one worker with ``xdist_group`` + ``--dist loadgroup``).

Chromium is Debian's (``chromium`` on PATH, installed by ``make test``); Playwright only drives it.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from esnet.atomic import atomic_write_json

REPO = Path(__file__).resolve().parents[2]
DEMO_RUNS = REPO / "assets" / "demo_runs"
SCREENSHOTS = REPO / ".cache" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
START_TIMEOUT_S = 90.0  # `streamlit run` up to a healthy /_stcore/health (not the first page: torch loads then)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's whole process group, SIGKILL it if still alive after 10 s."""
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def serve_dashboard(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """A ``streamlit run app/main.py`` server with environment ``env``, its output in ``log_path``;
    yields its base URL (``http://127.0.0.1:<port>``) and stops its process group afterwards."""
    for attempt in range(3):  # the port may be taken between _free_port and the server's bind
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
                 "--server.address", "127.0.0.1", "--server.headless", "true",
                 "--browser.gatherUsageStats", "false"],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline and not _healthy(url):
            time.sleep(0.25)
        if proc.poll() is None and _healthy(url):
            break
        _stop(proc)
    else:
        tail = log_path.read_text(errors="replace")[-3000:]
        pytest.fail(f"the dashboard did not become healthy at {url}/_stcore/health within {START_TIMEOUT_S:.0f} s "
                    f"(3 attempts); server log {log_path}:\n{tail}", pytrace=False)
    try:
        yield url
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory, demo_data: Path, embedding_cache: Path) -> Iterator[str]:
    """The base URL (``http://127.0.0.1:<port>``) of a dashboard server started for this module."""
    log_path = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = {**os.environ, "ESNET_RUNS_DIR": str(DEMO_RUNS), "ESNET_DEMO_ROOT": str(demo_data),
           "ESNET_CACHE_DIR": str(embedding_cache)}
    with serve_dashboard(env, log_path) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Debian Chromium driven by Playwright; fails (not skips) when Chromium is missing."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("Chromium is not installed (no `chromium` on PATH): `make test` installs it "
                    "(apt-get install -y chromium); the dashboard's browser tests need it.", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def timings() -> Iterator[dict[str, Any]]:
    """Seconds measured by the tests; written to .cache/screenshots/timings.json at the end of the module."""
    out: dict[str, Any] = {}
    yield out
    atomic_write_json(SCREENSHOTS / "timings.json", out)
