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
