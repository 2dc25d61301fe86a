"""Suite-wide settings and shared fixtures.

One intra-op thread per test process: make test runs 2 processes on 2 cores.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.synthetic import make_market  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Market-1501 layout (8 train ids x 4 images, 4 test ids) of 32x16 JPEGs."""
    return make_market(tmp_path_factory.mktemp("market"))


REPO = Path(__file__).resolve().parents[1]
DEMO_CHECKPOINT = REPO / "assets" / "demo_runs" / "esnet-p" / "checkpoints" / "last.pt"
"""The committed demo checkpoint (MobileNetV2 128x64 trained on the demo data); tests that
need a trained model use it and fail, not skip, when it is missing."""


@pytest.fixture(scope="session")
def demo_data() -> Path:
    """The full demo dataset, generated once into .cache/test-demo-data and shared by the
    pytest-xdist workers (a file lock serialises the first generation)."""
    import fcntl

    from esnet.api import ensure_demo_data

    cache = REPO / ".cache"
    cache.mkdir(exist_ok=True)
    with open(cache / ".test-demo-data.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return ensure_demo_data(cache / "test-demo-data")


@pytest.fixture(scope="session")
def embedding_cache() -> Path:
    """Embedding cache shared by tests (entries are keyed by checkpoint sha + file stats, written atomically)."""
    out = REPO / ".cache" / "test-embeddings"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="session")
def demo_checkpoint() -> Path:
    assert DEMO_CHECKPOINT.is_file(), f"the demo checkpoint {DEMO_CHECKPOINT} is missing: run 'make demo-assets'"
    return DEMO_CHECKPOINT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the dashboard timings the browser tests measured (tests/browser, property ``browser_timings``).

    A hook of this conftest because the pytest-xdist controller loads it; the reports carry the
    property from the worker. The numbers are also in .cache/screenshots/timings.json.
    """
    for report in terminalreporter.stats.get("passed", []):
        for name, value in getattr(report, "user_properties", ()):
            if name == "browser_timings":
                terminalreporter.write_sep("-", "dashboard timings (tests/browser; warm switches bounded at 20 s)")
                terminalreporter.write_line(str(value))
