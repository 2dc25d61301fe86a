"""Collect finished Market-1501 runs into results/ and render the README's Results section.

    python results/report.py collect runs/market/a_baseline --eval eval.json   # copy one run (no images)
    python results/report.py collect runs/pilot/p1 --pilot                     # a recipe pilot
    python results/report.py add-eval results/market1501/b_esnet_p global.json  # one branch's score
    python results/report.py render                                            # tables + plots + README

``collect`` copies what a reader needs to check a number and what the dashboard needs to show
the run (config.json, meta.json, status.json, metrics.jsonl, probes/probes.json and the
per-epoch probe CAMs/blocks) — never images or checkpoints: Market-1501 must not be
redistributed. Absolute paths in meta.json and probes.json are replaced by ``$MARKET`` /
``$WEIGHTS`` so the commands read the same on any machine; the dashboard resolves probe
images from the dataset root the user gives it (``relpath``).

``add-eval`` stores an ``esnet eval --feature global|erase|concat --json`` of a collected run's
final checkpoint as ``eval_<feature>.json`` beside it: how each branch scores on its own.
``collect`` replaces a run's directory whole, so add its branch scores again after re-collecting.

``render`` writes results/market1501/RESULTS.md, two PNGs (mAP over epochs, CMC) and the
block between ``<!-- results:start -->`` and ``<!-- results:end -->`` in README.md, with a second
table for the short recipe pilots in results/market1501-pilots (the runs that chose the learning
rate and the training copies; they were scored on the query set, so they are reported).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from esnet.config import TEST_FEATURES

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "market1501"
PILOTS = HERE / "market1501-pilots"
START, END = "<!-- results:start -->", "<!-- results:end -->"

ROWS = {  # run directory name -> what the row tests
    "a_baseline": "(a) baseline: no erasing, avg pooling (BoT-style)",
    "b_esnet_p": "(b) ES-Net, P-pooling",
    "c_esnet_avg": "(c) ES-Net, avg pooling",
    "d_esnet_max": "(d) ES-Net, max pooling",
    "e_random_p": "(e) random-block erasing, P-pooling",
    "f_esnet_p_seed1": "(f) ES-Net, P-pooling, seed 1",
    "g_esnet_avg_seed1": "(g) ES-Net, avg pooling, seed 1",
    "a_baseline_repeat": "(a) again: the same command run a second time",
    "h_random_avg": "(h) random-block erasing, avg pooling",
    "i_esnet_avg_block2": "(i) ES-Net, avg pooling, 2-row block (erase_height 0.25)",
    "j_baseline_seed1": "(j) baseline, seed 1",
    "k_baseline_e40": "(k) baseline, 40 epochs (decays at 28 and 36)",
    "l_esnet_avg_e40": "(l) ES-Net, avg pooling, 40 epochs (decays at 28 and 36)",
    "m_esnet_p": "(m) ES-Net, learned P-pooling (p at 10x the lr)",
    "n_esnet_p_seed1": "(n) ES-Net, learned P-pooling (p at 10x the lr), seed 1",
    "o_random_p": "(o) random-block erasing, learned P-pooling (p at 10x the lr)",
    "p_esnet_avg_batchcam": "(p) ES-Net, avg pooling, CAM on the batch's BNNeck statistics",
}

BASELINE = "a_baseline"
SEED_PAIRS = (("a_baseline", "j_baseline_seed1"), ("b_esnet_p", "f_esnet_p_seed1"),
              ("c_esnet_avg", "g_esnet_avg_seed1"), ("m_esnet_p", "n_esnet_p_seed1"))
"""Runs whose difference is the seed noise (each pair: the same command with seeds 0 and 1). When the
baseline's own pair is present, the other pairs' means are compared with the baseline's mean."""
REPEAT = ("a_baseline", "a_baseline_repeat")
"""A row and the same command run again: does the row reproduce within the seed noise?"""
LONGER = (("a_baseline", "k_baseline_e40"), ("c_esnet_avg", "l_esnet_avg_e40"))
"""(20-epoch run, the same command at 40 epochs) for the baseline, then ES-Net: does ES-Net's gain
hold over a baseline trained twice as long?"""


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


ONE_COPY = 12_178
"""Training images in one augmented copy (market1501-train-a); a root with more holds both copies."""


def root_variable(num_train_images: int) -> str:
    """``$MARKET`` for a root with one augmented training copy, ``$MARKET_AB`` for one with both."""
    return "$MARKET_AB" if num_train_images > ONE_COPY else "$MARKET"


def _anonymise(text: str, root: str, weights: str | None, root_var: str) -> str:
    text = text.replace(root.rstrip("/"), root_var)
    if weights:
        text = text.replace(weights, "$WEIGHTS")
    return text


def collect(run_dir: Path, eval_json: Path | None, out_root: Path = RESULTS) -> Path:
    """Copy one finished run into ``out_root/<run name>`` (atomically: built beside, then renamed)."""
    meta = json.loads((run_dir / "meta.json").read_text())
    status = json.loads((run_dir / "status.json").read_text())
    if status.get("state") != "finished":
        raise SystemExit(f"{run_dir} is not finished (state {status.get('state')!r}); collect finished runs only")
    config = json.loads((run_dir / "config.json").read_text())
    weights = config.get("model", {}).get("weights") or None
    root = meta["root"]
    root_var = root_variable(int(meta.get("num_train_images", 0)))
    out = out_root / run_dir.name
    tmp = out_root / f".{run_dir.name}.collecting"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "probes").mkdir(parents=True)
    for name in ("config.json", "meta.json", "status.json", "metrics.jsonl", "probes/probes.json"):
        if name.startswith("probes/") and not (run_dir / name).exists():
            continue  # trained with --probes 0
        text = (run_dir / name).read_text()
        (tmp / name).write_text(_anonymise(text, root, weights, root_var))
    for npz in sorted((run_dir / "probes").glob("epoch_*.npz")):
        shutil.copy2(npz, tmp / "probes" / npz.name)
    if eval_json is not None:
        (tmp / "eval.json").write_text(_anonymise(eval_json.read_text(), root, weights, root_var))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def add_eval(result_run: Path, eval_json: Path) -> Path:
    """Store ``eval_json`` (``esnet eval --json`` with ``test_feature``) as ``result_run/eval_<feature>.json``."""
    if not (result_run / "metrics.jsonl").is_file():
        raise SystemExit(f"{result_run} is not a collected run (no metrics.jsonl); run 'collect' first")
    text = eval_json.read_text()
    rep = json.loads(text)
    feature = rep.get("test_feature")
    if feature not in TEST_FEATURES:
        raise SystemExit(f"{eval_json} has test_feature {feature!r}; expected one of {list(TEST_FEATURES)} "
                         "(the output of 'esnet eval --feature F --json')")
    num_train = int(json.loads((result_run / "meta.json").read_text()).get("num_train_images", 0))
    out = result_run / f"eval_{feature}.json"
    _atomic_write(out, _anonymise(text, rep["root"], None, root_variable(num_train)).encode())
    return out


def _feature_table(rows: list[dict], results: Path) -> str:
    """R1 / mAP per test feature of each run with ``eval_<feature>.json`` files, and of the baseline
    (its global feature is its row) for reference; '' when no run has such files."""
    lines, commands = [], []
    for r in rows:
        evals = {f: json.loads((results / r["name"] / f"eval_{f}.json").read_text())
                 for f in TEST_FEATURES if (results / r["name"] / f"eval_{f}.json").exists()}
        if not evals and r["name"] != BASELINE:
            continue
        cells = []
        for f in TEST_FEATURES:
            e = evals.get(f) or (r if r["test_feature"] == f else None)
            cells.append("–" if e is None else f"{100 * e['R1']:.1f} / {100 * e['mAP']:.1f}")
        lines.append(f"| {r['what']} | " + " | ".join(cells) + " |")
        commands += [f"esnet eval --checkpoint runs/market/{r['name']}/checkpoints/last.pt --dataset market1501 "
                     f"--root {root_variable(r['num_train_images'] or 0)} --feature {f} --json" for f in evals]
    if not commands:
        return ""
    head = ["| run | concat: R1 / mAP | global | erase |", "|---|---|---|---|"]
    return "\n".join(head + lines) + "\n\n```bash\n" + "\n".join(commands) + "\n```\n"


def _records(run: Path) -> list[dict]:
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a half-written last line
    return rows


def _p_curve(records: list[dict], config: dict) -> dict[str, list[tuple[int, float]]]:
    """Learned p per branch over epochs, starting at (0, model.p_init); {} for a run without P-pooling."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for branch, value in (r.get("p") or {}).items():
            curves.setdefault(branch, [(0, float(config["model"]["p_init"]))]).append((r["epoch"], value))
    return curves


def _row(run: Path) -> dict:
    records = _records(run)
    evals = [r for r in records if "eval" in r]
    final = json.loads((run / "eval.json").read_text()) if (run / "eval.json").exists() else evals[-1]["eval"]
    meta = json.loads((run / "meta.json").read_text())
    config = json.loads((run / "config.json").read_text())
    last = records[-1]
    p = last.get("p") or {}
    return {
        "name": run.name, "what": ROWS.get(run.name, run.name), "epochs": last["epoch"],
        "R1": final["R1"], "R5": final["R5"], "mAP": final["mAP"], "mINP": final["mINP"],
        "p": ", ".join(f"{k} {v:.2f}" for k, v in sorted(p.items())) if p else "–",
        "hours": sum(r.get("time_s", 0.0) for r in records) / 3600.0,
        "command": meta["command"],
        "map_curve": [(r["epoch"], r["eval"]["mAP"]) for r in evals],
        "cmc": final.get("cmc", evals[-1]["eval"].get("cmc", []))[:20],
        "p_curve": _p_curve(records, config),
        "num_query": final.get("num_query"), "num_gallery": final.get("num_gallery"),
        "num_train_images": meta.get("num_train_images"),
        "test_feature": config["model"]["test_feature"],
        "config": config,
    }


def _reproduction(first: dict, again: dict, seed_pairs: list[tuple[dict, dict]]) -> str:
    """One line: how far the second run of a command lands from the first, against the seed noise
    (the largest mAP difference between the two seeds of one command)."""
    d = {k: 100 * (again[k] - first[k]) for k in ("mAP", "R1", "mINP")}
    line = (f"Reproduction, {again['name']} − {first['name']} (the same command run again): "
            f"mAP {d['mAP']:+.1f}, R1 {d['R1']:+.1f}, mINP {d['mINP']:+.1f}")
    if not seed_pairs:
        return line + "."
    band = max(100 * abs(b["mAP"] - a["mAP"]) for a, b in seed_pairs)
    where = "inside" if abs(d["mAP"]) <= band else "outside"
    return line + f"; {where} the seed noise (two seeds of one command differ by up to {band:.1f} mAP)."


def _line_styles(names: list[str], palette: list[str]) -> dict[str, tuple[str, str]]:
    """Colour and line style per run: a second seed or a repeat is dashed, a longer run dotted, in its
    first run's colour, so each pair reads as one; every other run gets the next palette colour, solid."""
    follows = {again: (first, "--") for first, again in (*SEED_PAIRS, REPEAT) if first in names}
    follows.update({longer: (first, ":") for first, longer in LONGER if first in names})
    colours = iter(palette * (len(names) // len(palette) + 1))
    own = {n: next(colours) for n in names if n not in follows}
    return {n: (own[follows[n][0]], follows[n][1]) if n in follows else (own[n], "-") for n in names}


def _longer_line(by_name: dict[str, dict]) -> str:
    """One line on the longer pair: ES-Net − baseline at 40 epochs, and what 40 epochs gave each over 20
    ('' until both longer runs are collected)."""
    (base_short, base), (esnet_short, esnet) = LONGER
    if base not in by_name or esnet not in by_name:
        return ""
    b, e = by_name[base], by_name[esnet]
    line = (f"Longer schedule, {esnet} − {base} (both trained {e['epochs']} epochs): "
            + ", ".join(f"{k} {100 * (e[k] - b[k]):+.1f}" for k in ("mAP", "R1", "mINP")))
    gains = [f"{long} − {short} mAP {100 * (by_name[long]['mAP'] - by_name[short]['mAP']):+.1f}"
             for long, short in ((base, base_short), (esnet, esnet_short)) if short in by_name]
    return line + (f"; the longer schedule itself: {', '.join(gains)}." if gains else ".")


def _plots(rows: list[dict], out: Path) -> list[str]:
    """mAP over epochs and the final CMC of every row, as PNGs in ``out``; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    charts = (
        ("map_over_epochs.png", "epoch", "mAP (%)", "Market-1501 mAP during training", "o",
         lambda r: ([e for e, _ in r["map_curve"]], [100 * m for _, m in r["map_curve"]])),
        ("cmc.png", "rank", "matching rate (%)", "Market-1501 CMC (final epoch)", ".",
         lambda r: (range(1, len(r["cmc"]) + 1), [100 * v for v in r["cmc"]])),
    )
    style = _line_styles([r["name"] for r in rows], plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for name, xlabel, ylabel, title, marker, series in charts:
        fig, ax = plt.subplots(figsize=(7.6, 3.8), dpi=110)
        for r in rows:
            c, ls = style[r["name"]]
            ax.plot(*series(r), marker=marker, color=c, linestyle=ls, label=r["name"])
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and ranks are whole numbers
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)
    names = [c[0] for c in charts]
    learned = [r for r in rows if r["p_curve"]]
    if learned:
        fig = _p_figure(learned, style)
        fig.savefig(out / "p_over_epochs.png")
        plt.close(fig)
        names.append("p_over_epochs.png")
    return names


BRANCH_MARKERS = {"global": "o", "erase": "s"}


def _p_figure(rows: list[dict], style: dict[str, tuple[str, str]]):
    """Learned p over epochs: one line per run and branch (marker per branch, colour and style per run)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7.6, 3.8), dpi=110)
    for r in rows:
        c, ls = style[r["name"]]
        for branch in sorted(r["p_curve"]):
            if branch not in BRANCH_MARKERS:
                raise ValueError(f"{r['name']}: learned p of an unknown branch {branch!r}; "
                                 f"expected one of {sorted(BRANCH_MARKERS)}")
            epochs, values = zip(*r["p_curve"][branch])
            ax.plot(epochs, values, marker=BRANCH_MARKERS[branch], markersize=3, color=c, linestyle=ls,
                    label=f"{r['name']} {branch}")
    ax.set(xlabel="epoch (0 = p_init)", ylabel="p",
           title="Learned P-pooling exponent per branch (1 = average, larger = closer to max)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def _pilot_table(pilots: Path) -> str:
    """The recipe pilots as a markdown table with their commands ('' when there are none)."""
    runs = sorted(p for p in pilots.iterdir() if (p / "metrics.jsonl").exists()) if pilots.is_dir() else []
    if not runs:
        return ""
    lines = ["| pilot | lr | training images | iterations / epoch | epochs | R1 | mAP | mINP |",
             "|---|---|---|---|---|---|---|---|"]
    commands = []
    for run in runs:
        r = _row(run)
        cfg = r["config"]
        iters = cfg["train"].get("max_iters_per_epoch") or "all"
        lines.append(f"| {run.name} | {cfg['optim']['lr']:g} | {r['num_train_images']:,} | {iters} | "
                     f"{r['epochs']} | {100 * r['R1']:.1f} | {100 * r['mAP']:.1f} | {100 * r['mINP']:.1f} |")
        commands.append(f"# {run.name}\n{r['command']}")
    return ("\n".join(lines) + "\n\nPilot commands (`$MARKET_AB` = all three archives unpacked into one folder, "
            "both augmented training copies):\n\n```bash\n" + "\n".join(commands) + "\n```\n")


def render(results: Path = RESULTS, readme: Path = REPO / "README.md", pilots: Path = PILOTS) -> str:
    """Write RESULTS.md + plots and refresh README's results block; returns the table markdown."""
    runs = [results / name for name in ROWS if (results / name / "metrics.jsonl").exists()]
    runs += sorted(p for p in results.iterdir() if p.is_dir() and not p.name.startswith(".")
                   and p.name not in ROWS and (p / "metrics.jsonl").exists())
    rows = [_row(r) for r in runs]
    base = next((r for r in rows if r["name"] == BASELINE), None)
    lines = ["| run | epochs | R1 | R5 | mAP | mINP | mAP − (a) | learned p | train time (h, CPU) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        delta = "–" if base is None or r is base else f"{100 * (r['mAP'] - base['mAP']):+.1f}"
        lines.append(f"| {r['what']} | {r['epochs']} | {100 * r['R1']:.1f} | {100 * r['R5']:.1f} | "
                     f"{100 * r['mAP']:.1f} | {100 * r['mINP']:.1f} | {delta} | {r['p']} | {r['hours']:.2f} |")
    table = "\n".join(lines)
    by_name = {r["name"]: r for r in rows}
    pairs = [(by_name[x], by_name[y]) for x, y in SEED_PAIRS if x in by_name and y in by_name]
    # what each pair's mean is compared with: the baseline's two-seed mean once its pair exists, else (a)
    base_pair = next((pair for pair in pairs if pair[0] is base), None)
    if base_pair is not None:
        reference = (base_pair[0]["mAP"] + base_pair[1]["mAP"]) / 2
        against = f"against the baseline's two seeds (mean {100 * reference:.2f}); each pair's seeds are"
        base_apart = f" and {100 * abs(base_pair[1]['mAP'] - base_pair[0]['mAP']):.1f}"
    elif base is not None:
        reference, against, base_apart = base["mAP"], "against (a); the two seeds are", ""
    for a, b in pairs:
        mean = (a["mAP"] + b["mAP"]) / 2
        table += (f"\n\nSeed noise, {b['name']} − {a['name']} (same command, seed 1 vs 0): "
                  f"mAP {100 * (b['mAP'] - a['mAP']):+.1f}, R1 {100 * (b['R1'] - a['R1']):+.1f}, "
                  f"mINP {100 * (b['mINP'] - a['mINP']):+.1f}. Mean mAP of {a['name']} and {b['name']} "
                  f"{100 * mean:.2f}")
        table += ("." if base is None or a is base else
                  f", {100 * (mean - reference):+.2f} {against} {100 * abs(b['mAP'] - a['mAP']):.1f}{base_apart} apart.")
    if REPEAT[0] in by_name and REPEAT[1] in by_name:
        table += "\n\n" + _reproduction(by_name[REPEAT[0]], by_name[REPEAT[1]], pairs)
    if longer := _longer_line(by_name):
        table += "\n\n" + longer
    commands = "\n".join(f"# {r['name']}\n{r['command']}" for r in rows)
    plots = _plots(rows, results) if rows else []
    body = (f"{table}\n\nCommands (`$MARKET` = the unpacked Market-1501 with one augmented training copy, "
            f"`$WEIGHTS` = `esnet weights fetch mobilenet_v2`):\n\n```bash\n{commands}\n```\n\n"
            + "".join(f"![{p}](results/market1501/{p})\n" for p in plots))
    feature_table = _feature_table(rows, results)
    if feature_table:
        body += ("\nEach branch on its own (the final checkpoint scored with `esnet eval --feature`; the rows "
                 "above use the run's test feature, concat for ES-Net):\n\n" + feature_table)
    pilot_table = _pilot_table(pilots)
    if pilot_table:
        body += ("\nRecipe pilots (chosen before the rows above; scored on the query set, hence reported):\n\n"
                 + pilot_table)
    _atomic_write(results / "RESULTS.md", ("# Market-1501 results\n\n" + body.replace("results/market1501/", ""))
                  .encode())
    text = readme.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        _atomic_write(readme, (head + START + "\n" + body + END + tail).encode())
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="copy a finished run into results/market1501/")
    c.add_argument("run_dir", type=Path)
    c.add_argument("--eval", type=Path, help="output of 'esnet eval --json' for the run's final checkpoint")
    c.add_argument("--pilot", action="store_true", help="a recipe pilot: copy into results/market1501-pilots/")
    a = sub.add_parser("add-eval", help="store one test feature's score of a collected run")
    a.add_argument("result_run", type=Path, help="results/market1501/<run>")
    a.add_argument("eval_json", type=Path, help="output of 'esnet eval --feature F --json'")
    sub.add_parser("render", help="table, plots and the README block from results/market1501/")
    args = parser.parse_args(argv)
    if args.cmd == "collect":
        print(collect(args.run_dir, args.eval, PILOTS if args.pilot else RESULTS))
    elif args.cmd == "add-eval":
        print(add_eval(args.result_run, args.eval_json))
    else:
        print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
