"""results/report.py: collecting a finished run keeps no images and no absolute paths; render fills the README block."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_RUN = ROOT / "assets" / "demo_runs" / "esnet-p"


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("results_report", ROOT / "results" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_collect_and_render_a_finished_run(report, tmp_path) -> None:
    out = report.collect(DEMO_RUN, None, out_root=tmp_path / "results")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith((".jpg", ".png", ".pt"))], files
    assert {"config.json", "meta.json", "metrics.jsonl", "status.json", "probes/probes.json"} <= set(files)
    root = json.loads((DEMO_RUN / "meta.json").read_text())["root"]
    assert root not in (out / "meta.json").read_text() and "$MARKET" in (out / "meta.json").read_text()
    assert root not in (out / "probes" / "probes.json").read_text()

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.START}\nold\n{report.END}\ntail\n")
    table = report.render(tmp_path / "results", readme)
    last_eval = [json.loads(x) for x in (DEMO_RUN / "metrics.jsonl").read_text().splitlines() if '"eval"' in x][-1]
    assert f"{100 * last_eval['eval']['mAP']:.1f}" in table
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("tail\n") and "old" not in text
    assert "esnet demo build (run esnet-p)" in text and (tmp_path / "results" / "cmc.png").stat().st_size > 1000


def test_collect_refuses_an_unfinished_run(report, tmp_path) -> None:
    from tests.synthetic import make_run

    run = make_run(tmp_path / "r", state="running")
    (run / "meta.json").write_text(json.dumps({"root": "/x", "command": "esnet train"}))
    with pytest.raises(SystemExit, match="not finished"):
        report.collect(run, None, out_root=tmp_path / "results")
