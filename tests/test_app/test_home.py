"""AppTest smoke for the router and the Home page on a small generated demo dataset."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from esnet.data.demo import DEMO_VERSION, generate_demo

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo_data"
    generate_demo(out, num_ids=12, seed=3)
    return out


def test_home_shows_demo_dataset_counts(demo_root, monkeypatch) -> None:
    monkeypatch.setenv("ESNET_DEMO_ROOT", str(demo_root))
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert "Erasing Salient Parts" in at.title[0].value
    df = at.dataframe[0].value
    assert list(df["split"]) == ["train", "query", "gallery"]
    # 12 ids: half train, half test (query/gallery share ids; the gallery may add distractor pid 0).
    assert df.loc[df["split"] == "train", "ids"].item() == 6
    assert df.loc[df["split"] == "query", "ids"].item() == 6
    assert df["cameras"].min() >= 4


def test_home_reports_a_broken_demo_dataset(tmp_path, monkeypatch) -> None:
    broken = tmp_path / "demo_data"
    (broken / "query").mkdir(parents=True)
    (broken / "query" / "not_a_market_name.jpg").write_bytes(b"x")
    # A current marker, so the page reads the folder instead of regenerating it.
    (broken / ".complete").write_text(f'{{"version": {DEMO_VERSION}}}')
    monkeypatch.setenv("ESNET_DEMO_ROOT", str(broken))
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    assert not at.exception
    assert "could not be read" in at.error[0].value
    assert "not_a_market_name.jpg" in at.error[0].value
