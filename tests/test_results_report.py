"""results/report.py: collecting a finished run keeps no images and no absolute paths; render fills the README block."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_RUNS = ROOT / "assets" / "demo_runs"
DEMO_RUN = DEMO_RUNS / "esnet-p"


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
    table = report.render(tmp_path / "results", readme, pilots=tmp_path / "no-pilots")
    last_eval = [json.loads(x) for x in (DEMO_RUN / "metrics.jsonl").read_text().splitlines() if '"eval"' in x][-1]
    assert f"{100 * last_eval['eval']['mAP']:.1f}" in table
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("tail\n") and "old" not in text
    assert "esnet demo build (run esnet-p)" in text and (tmp_path / "results" / "cmc.png").stat().st_size > 1000
    assert "Recipe pilots" not in text


def test_pilots_get_their_own_table(report, tmp_path) -> None:
    report.collect(DEMO_RUN, None, out_root=tmp_path / "results")
    report.collect(DEMO_RUN, None, out_root=tmp_path / "pilots")
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.START}\n{report.END}\n")
    report.render(tmp_path / "results", readme, pilots=tmp_path / "pilots")
    pilots = readme.read_text().split("Recipe pilots", 1)[1]
    cfg = json.loads((DEMO_RUN / "config.json").read_text())
    meta = json.loads((DEMO_RUN / "meta.json").read_text())
    last_eval = [json.loads(x) for x in (DEMO_RUN / "metrics.jsonl").read_text().splitlines() if '"eval"' in x][-1]
    row = next(line for line in pilots.splitlines() if line.startswith("| esnet-p |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == f"{cfg['optim']['lr']:g}" and cells[2] == f"{meta['num_train_images']:,}"
    assert cells[6] == f"{100 * last_eval['eval']['mAP']:.1f}"
    assert "# esnet-p\nesnet demo build" in pilots


def test_root_variable_names_the_training_copies(report) -> None:
    assert report.root_variable(12_178) == "$MARKET"
    assert report.root_variable(24_351) == "$MARKET_AB"


def test_collect_refuses_an_unfinished_run(report, tmp_path) -> None:
    from tests.synthetic import make_run

    run = make_run(tmp_path / "r", state="running")
    (run / "meta.json").write_text(json.dumps({"root": "/x", "command": "esnet train"}))
    with pytest.raises(SystemExit, match="not finished"):
        report.collect(run, None, out_root=tmp_path / "results")


def _final_eval(run: Path) -> dict:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x][-1]["eval"]


def _render_demo_runs_as(report, tmp_path: Path, runs) -> str:
    """Collect demo runs under result names ((demo run, name) pairs) and render; returns the table."""
    (tmp_path / "results").mkdir()
    for src, name in runs:
        report.collect(DEMO_RUNS / src, None, out_root=tmp_path / "collected").rename(tmp_path / "results" / name)
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.START}\n{report.END}\n")
    return report.render(tmp_path / "results", readme, pilots=tmp_path / "no-pilots")


def test_table_has_the_map_gain_over_the_baseline_and_the_seed_noise(report, tmp_path) -> None:
    table = _render_demo_runs_as(report, tmp_path, (("baseline-avg", "a_baseline"), ("esnet-p", "b_esnet_p"),
                                                    ("esnet-avg", "f_esnet_p_seed1")))
    base, b, f = (_final_eval(DEMO_RUNS / n) for n in ("baseline-avg", "esnet-p", "esnet-avg"))
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()
            if line.startswith("| (")}
    assert rows["(a) baseline: no erasing, avg pooling (BoT-style)"][6] == "–"
    assert rows["(b) ES-Net, P-pooling"][6] == f"{100 * (b['mAP'] - base['mAP']):+.1f}"
    assert rows["(f) ES-Net, P-pooling, seed 1"][6] == f"{100 * (f['mAP'] - base['mAP']):+.1f}"
    assert f"f_esnet_p_seed1 − b_esnet_p (same command, seed 1 vs 0): mAP {100 * (f['mAP'] - b['mAP']):+.1f}" in table
    mean = (b["mAP"] + f["mAP"]) / 2
    assert f"Mean mAP of b_esnet_p and f_esnet_p_seed1 {100 * mean:.2f}, {100 * (mean - base['mAP']):+.2f} against (a)" in table


def test_branch_evals_get_a_table_with_their_commands(report, tmp_path, capsys) -> None:
    from esnet import api, cli

    demo_data = ROOT / "assets" / "demo_data"
    api.ensure_demo_data(demo_data)
    out = report.collect(DEMO_RUN, None, out_root=tmp_path / "results")
    baseline = DEMO_RUNS / "baseline-avg"
    report.collect(baseline, None, out_root=tmp_path / "collected").rename(tmp_path / "results" / "a_baseline")
    for feature in ("global", "erase"):
        code = cli.main(["eval", "--checkpoint", str(DEMO_RUN), "--dataset", "demo", "--root", str(demo_data),
                         "--feature", feature, "--json"])
        text, err = capsys.readouterr()
        assert code == 0, err
        (tmp_path / f"{feature}.json").write_text(text)
        stored = report.add_eval(out, tmp_path / f"{feature}.json")
        assert stored.name == f"eval_{feature}.json" and str(demo_data) not in stored.read_text()
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.START}\n{report.END}\n")
    report.render(tmp_path / "results", readme, pilots=tmp_path / "no-pilots")
    branches = readme.read_text().split("Each branch on its own", 1)[1]
    row = next(line for line in branches.splitlines() if line.startswith("| esnet-p |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    final = _final_eval(DEMO_RUN)
    g, e = (json.loads((tmp_path / f"{f}.json").read_text()) for f in ("global", "erase"))
    assert cells[1:] == [f"{100 * final['R1']:.1f} / {100 * final['mAP']:.1f}",
                         f"{100 * g['R1']:.1f} / {100 * g['mAP']:.1f}", f"{100 * e['R1']:.1f} / {100 * e['mAP']:.1f}"]
    assert "--feature erase --json" in branches
    base_row = next(line for line in branches.splitlines() if line.startswith("| (a) baseline"))
    b = _final_eval(baseline)
    assert [c.strip() for c in base_row.strip("|").split("|")][1:] == ["–", f"{100 * b['R1']:.1f} / {100 * b['mAP']:.1f}",
                                                                      "–"]

    (tmp_path / "old.json").write_text(json.dumps({"mAP": 0.5, "root": "/x"}))  # an eval from before --feature
    with pytest.raises(SystemExit, match="has test_feature None"):
        report.add_eval(out, tmp_path / "old.json")
    with pytest.raises(SystemExit, match="not a collected run"):
        report.add_eval(tmp_path / "nowhere", tmp_path / "global.json")


@pytest.mark.parametrize("repeat, seed1, where", [("baseline-avg", "esnet-avg", "inside"),   # 0 vs 1.4 apart
                                                  ("esnet-max", "esnet-p", "outside")])      # 9.3 vs 0
def test_reproduction_line_compares_the_repeat_with_the_seed_noise(report, tmp_path, repeat, seed1, where) -> None:
    runs = (("baseline-avg", "a_baseline"), (repeat, "a_baseline_repeat"), ("esnet-p", "b_esnet_p"),
            (seed1, "f_esnet_p_seed1"))
    table = _render_demo_runs_as(report, tmp_path, runs)
    a, again, b, f = (_final_eval(DEMO_RUNS / src) for src, _ in runs)
    d = 100 * (again["mAP"] - a["mAP"])
    band = 100 * abs(f["mAP"] - b["mAP"])
    assert (f"Reproduction, a_baseline_repeat − a_baseline (the same command run again): mAP {d:+.1f}, "
            f"R1 {100 * (again['R1'] - a['R1']):+.1f}") in table
    assert f"; {where} the seed noise (two seeds of one command differ by up to {band:.1f} mAP)." in table
    assert "| (a) again: the same command run a second time |" in table


def test_each_seed_pair_gets_its_line_and_the_band_is_the_widest(report, tmp_path) -> None:
    runs = (("baseline-avg", "a_baseline"), ("baseline-avg", "a_baseline_repeat"), ("esnet-p", "b_esnet_p"),
            ("esnet-p", "f_esnet_p_seed1"), ("esnet-avg", "c_esnet_avg"), ("esnet-max", "g_esnet_avg_seed1"))
    table = _render_demo_runs_as(report, tmp_path, runs)
    base, avg, mx = (_final_eval(DEMO_RUNS / n) for n in ("baseline-avg", "esnet-avg", "esnet-max"))
    assert "f_esnet_p_seed1 − b_esnet_p (same command, seed 1 vs 0): mAP +0.0" in table
    assert f"g_esnet_avg_seed1 − c_esnet_avg (same command, seed 1 vs 0): mAP {100 * (mx['mAP'] - avg['mAP']):+.1f}" in table
    mean = (avg["mAP"] + mx["mAP"]) / 2
    assert f"Mean mAP of c_esnet_avg and g_esnet_avg_seed1 {100 * mean:.2f}, {100 * (mean - base['mAP']):+.2f}" in table
    band = 100 * abs(mx["mAP"] - avg["mAP"])  # 10.8 > the P pair's 0.0
    assert f"mAP +0.0, R1 +0.0, mINP +0.0; inside the seed noise (two seeds of one command differ by up to {band:.1f} mAP)" in table


def test_with_the_baselines_second_seed_the_pairs_are_compared_with_the_baselines_mean(report, tmp_path) -> None:
    runs = (("baseline-avg", "a_baseline"), ("esnet-max", "j_baseline_seed1"), ("esnet-p", "b_esnet_p"),
            ("esnet-avg", "f_esnet_p_seed1"))
    table = _render_demo_runs_as(report, tmp_path, runs)
    a, j, b, f = (_final_eval(DEMO_RUNS / src) for src, _ in runs)
    base_mean, mean = (a["mAP"] + j["mAP"]) / 2, (b["mAP"] + f["mAP"]) / 2
    assert (f"j_baseline_seed1 − a_baseline (same command, seed 1 vs 0): mAP {100 * (j['mAP'] - a['mAP']):+.1f}, "
            f"R1 {100 * (j['R1'] - a['R1']):+.1f}, mINP {100 * (j['mINP'] - a['mINP']):+.1f}. "
            f"Mean mAP of a_baseline and j_baseline_seed1 {100 * base_mean:.2f}.") in table
    assert (f"Mean mAP of b_esnet_p and f_esnet_p_seed1 {100 * mean:.2f}, {100 * (mean - base_mean):+.2f} against "
            f"the baseline's two seeds (mean {100 * base_mean:.2f}); each pair's seeds are "
            f"{100 * abs(f['mAP'] - b['mAP']):.1f} and {100 * abs(j['mAP'] - a['mAP']):.1f} apart.") in table
    assert "| (j) baseline, seed 1 |" in table and "against (a)" not in table


def test_a_second_seed_or_a_repeat_is_dashed_in_its_first_runs_colour(report) -> None:
    names = ["a_baseline", "b_esnet_p", "f_esnet_p_seed1", "a_baseline_repeat", "g_esnet_avg_seed1", "x"]
    style = report._line_styles(names, ["red", "green", "blue"])
    assert style["a_baseline"] == ("red", "-") and style["b_esnet_p"] == ("green", "-")
    assert style["f_esnet_p_seed1"] == ("green", "--") and style["a_baseline_repeat"] == ("red", "--")
    assert style["g_esnet_avg_seed1"] == ("blue", "-")  # its first run (c) is not plotted: a run of its own
    assert style["x"] == ("red", "-")                   # the palette wraps


def test_a_longer_run_is_dotted_in_its_20_epoch_runs_colour(report) -> None:
    style = report._line_styles(["a_baseline", "c_esnet_avg", "k_baseline_e40", "l_esnet_avg_e40"], ["red", "green"])
    assert style["k_baseline_e40"] == ("red", ":") and style["l_esnet_avg_e40"] == ("green", ":")
    alone = report._line_styles(["k_baseline_e40", "l_esnet_avg_e40"], ["red", "green"])
    assert alone == {"k_baseline_e40": ("red", "-"), "l_esnet_avg_e40": ("green", "-")}


def test_the_longer_pair_gets_the_esnet_gain_and_what_the_longer_schedule_gave(report, tmp_path) -> None:
    runs = (("baseline-avg", "a_baseline"), ("esnet-p", "k_baseline_e40"), ("esnet-max", "l_esnet_avg_e40"))
    table = _render_demo_runs_as(report, tmp_path, runs)
    a, k, l_ = (_final_eval(DEMO_RUNS / src) for src, _ in runs)
    epochs = json.loads((DEMO_RUNS / "esnet-max" / "config.json").read_text())["optim"]["epochs"]
    assert (f"Longer schedule, l_esnet_avg_e40 − k_baseline_e40 (both trained {epochs} epochs): "
            f"mAP {100 * (l_['mAP'] - k['mAP']):+.1f}, R1 {100 * (l_['R1'] - k['R1']):+.1f}, "
            f"mINP {100 * (l_['mINP'] - k['mINP']):+.1f}; the longer schedule itself: "
            f"k_baseline_e40 − a_baseline mAP {100 * (k['mAP'] - a['mAP']):+.1f}.") in table  # (c) is absent
    assert "| (l) ES-Net, avg pooling, 40 epochs (decays at 28 and 36) |" in table


def test_no_longer_line_until_both_longer_runs_are_collected(report, tmp_path) -> None:
    table = _render_demo_runs_as(report, tmp_path, (("baseline-avg", "a_baseline"), ("esnet-p", "k_baseline_e40")))
    assert "Longer schedule" not in table


def test_learned_p_gets_a_curve_per_branch_from_p_init_and_a_plot(report, tmp_path) -> None:
    _render_demo_runs_as(report, tmp_path, (("baseline-avg", "a_baseline"), ("esnet-p", "m_esnet_p")))
    records = [json.loads(x) for x in (DEMO_RUNS / "esnet-p" / "metrics.jsonl").read_text().splitlines()]
    p_init = json.loads((DEMO_RUNS / "esnet-p" / "config.json").read_text())["model"]["p_init"]
    row = report._row(tmp_path / "results" / "m_esnet_p")
    assert sorted(row["p_curve"]) == sorted(records[-1]["p"])
    for branch, curve in row["p_curve"].items():
        assert curve[0] == (0, p_init)
        assert curve[1:] == [(r["epoch"], r["p"][branch]) for r in records]
    assert report._row(tmp_path / "results" / "a_baseline")["p_curve"] == {}
    assert (tmp_path / "results" / "p_over_epochs.png").stat().st_size > 1000
    fig = report._p_figure([row], {"m_esnet_p": ("red", "--")})
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert sorted(lines) == sorted(f"m_esnet_p {b}" for b in row["p_curve"])
    for branch, curve in row["p_curve"].items():
        line = lines[f"m_esnet_p {branch}"]
        assert list(line.get_xdata()) == [e for e, _ in curve] and list(line.get_ydata()) == [v for _, v in curve]
        assert line.get_linestyle() == "--" and line.get_marker() == report.BRANCH_MARKERS[branch]
    with pytest.raises(ValueError, match=r"m_esnet_p: learned p of an unknown branch 'third'"):
        report._p_figure([{**row, "p_curve": {"third": [(0, 3.0)]}}], {"m_esnet_p": ("red", "-")})
    assert "![p_over_epochs.png](results/market1501/p_over_epochs.png)" in (tmp_path / "README.md").read_text()


def test_no_p_plot_without_a_learned_p_run(report, tmp_path) -> None:
    _render_demo_runs_as(report, tmp_path, (("baseline-avg", "a_baseline"),))
    assert not (tmp_path / "results" / "p_over_epochs.png").exists()
