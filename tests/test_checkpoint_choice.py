"""eval / embed / search load a run directory's last.pt; best.pt (chosen on the test split) only when
asked for with --checkpoint-file best, and then labelled test-selected."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from esnet import cli
from esnet.checkpoint import save_checkpoint
from esnet.config import Config, override
from esnet.model import build_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory whose last.pt and best.pt hold different models (seeds 0 and 1)."""
    cfg = override(Config(), {"model.backbone": "resnet18", "data.height": 64, "data.width": 32})
    d = tmp_path_factory.mktemp("run") / "r"
    (d / "checkpoints").mkdir(parents=True)
    for seed, name in ((0, "last"), (1, "best")):
        torch.manual_seed(seed)
        save_checkpoint(d / "checkpoints" / f"{name}.pt", model=build_model(cfg.model, 3), optimizer=None,
                        scheduler=None, epoch=2 if name == "last" else 1, config=cfg, num_classes=3)
    return d


def _eval(capsys, run_dir, market, *extra):
    code = cli.main(["eval", "--checkpoint", str(run_dir), "--dataset", "market1501", "--root", str(market),
                     "--no-cache", *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_eval_defaults_to_last_and_labels_best(run_dir, market, capsys):
    last = json.loads(_eval(capsys, run_dir, market, "--json"))
    assert last["checkpoint"] == str(run_dir / "checkpoints" / "last.pt") and last["checkpoint_test_selected"] is False
    best = json.loads(_eval(capsys, run_dir, market, "--json", "--checkpoint-file", "best"))
    assert best["checkpoint"] == str(run_dir / "checkpoints" / "best.pt") and best["checkpoint_test_selected"] is True
    assert best["checkpoint_sha256"] != last["checkpoint_sha256"]
    text = _eval(capsys, run_dir, market, "--checkpoint-file", "best")
    assert "test-selected: best.pt" in text
    assert "test-selected" not in _eval(capsys, run_dir, market)
    # the file path itself is labelled the same way
    by_path = json.loads(_eval(capsys, run_dir / "checkpoints" / "best.pt", market, "--json"))
    assert by_path["checkpoint_test_selected"] is True


def test_embed_and_search_follow_the_choice(run_dir, market, tmp_path, capsys):
    for which in ("last", "best"):
        out_npz = tmp_path / f"{which}.npz"
        code = cli.main(["embed", "--checkpoint", str(run_dir), "--folder", str(market / "query"), "--out",
                         str(out_npz), "--no-cache", "--json", "--checkpoint-file", which])
        got = json.loads(capsys.readouterr().out)
        assert code == 0 and got["checkpoint_test_selected"] is (which == "best")
        assert bool(np.load(out_npz)["checkpoint_test_selected"]) is (which == "best")
    query = sorted((market / "query").iterdir())[0]
    code = cli.main(["search", "--checkpoint", str(run_dir), "--gallery", str(market / "bounding_box_test"),
                     "--query", str(query), "--topk", "2", "--no-cache", "--checkpoint-file", "best"])
    out = capsys.readouterr().out
    assert code == 0 and out.splitlines()[0].startswith("checkpoint ") and "test-selected" in out.splitlines()[0]


def test_a_run_with_only_best_is_not_loaded_silently(run_dir, market, tmp_path, capsys):
    only_best = tmp_path / "only_best"
    (only_best / "checkpoints").mkdir(parents=True)
    (only_best / "checkpoints" / "best.pt").write_bytes((run_dir / "checkpoints" / "best.pt").read_bytes())
    code = cli.main(["eval", "--checkpoint", str(only_best), "--dataset", "market1501", "--root", str(market)])
    err = capsys.readouterr().err
    assert code == 2 and "has no last.pt" in err and "--checkpoint-file best" in err
    assert len(err.strip().splitlines()) == 1
