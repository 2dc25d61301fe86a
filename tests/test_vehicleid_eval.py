"""``esnet eval --dataset vehicleid --test-size small|medium|large``: the VehicleID protocol end to end.

A tiny VehicleID in the real list-file layout (tests/synthetic.py ``make_vehicleid``) and a tiny
random checkpoint; the CLI's numbers must be ``metrics.evaluate_vehicleid`` of the test list's
own features (10 draws, seed 0), printed as mean ± std.
"""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from esnet import cli
from esnet.data.datasets import load_dataset
from esnet.embedding import embed_split, load_inference
from esnet.metrics import evaluate_vehicleid, pairwise_distance
from tests.synthetic import VEHICLEID_FIXTURE_IDS, make_vehicleid, random_checkpoint


@pytest.fixture(scope="module")
def vehicleid(tmp_path_factory) -> Path:
    return make_vehicleid(tmp_path_factory.mktemp("vehicleid") / "VehicleID_V1.0")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", num_classes=5)


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("size", ["small", "medium", "large"])
def test_cli_runs_the_vehicleid_protocol_with_mean_and_std(vehicleid, ckpt, size, capsys):
    argv = ("eval", "--checkpoint", ckpt, "--dataset", "vehicleid", "--root", vehicleid, "--test-size", size,
            "--no-cache")
    code, out, err = _run(capsys, *argv, "--json")
    assert code == 0, err
    got = json.loads(out)
    ids = VEHICLEID_FIXTURE_IDS[size]
    assert (got["test_size"], got["protocol"], got["repeats"], got["seed"]) == (size, "vehicleid", 10, 0)
    assert (got["num_ids"], got["num_images"]) == (ids, 3 * ids)

    # the same numbers from the test list's features and the metrics function
    data = load_dataset("vehicleid", str(vehicleid), vehicleid_test_size=size)
    emb = embed_split(load_inference(ckpt, device="cpu"), data, "query")
    feats = np.asarray(emb.features)
    ref = evaluate_vehicleid(pairwise_distance(feats, feats), emb.pids, repeats=10, seed=0)
    assert got["mAP"]["mean"] == pytest.approx(ref.mAP_mean, abs=1e-6)
    assert got["mAP"]["std"] == pytest.approx(ref.mAP_std, abs=1e-6)
    assert got["R1"] == pytest.approx({"mean": ref.r1_mean, "std": ref.r1_std}, abs=1e-6)
    assert got["R5"] == pytest.approx({"mean": ref.r5_mean, "std": ref.r5_std}, abs=1e-6)
    assert got["cmc_mean"] == pytest.approx(ref.cmc_mean[:20], abs=1e-6)

    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    assert f"vehicleid {size} test list" in out and f"{3 * ids} images, {ids} vehicles" in out and "10 draws" in out
    shown = dict(re.findall(r"(R1|R5|R10|mAP) ([\d.]+ ± [\d.]+)%", out))
    assert shown["mAP"] == f"{100 * ref.mAP_mean:.2f} ± {100 * ref.mAP_std:.2f}"
    assert shown["R1"] == f"{100 * ref.r1_mean:.2f} ± {100 * ref.r1_std:.2f}"


def test_random_draws_make_a_spread(vehicleid, ckpt, capsys):
    """8 look-alike vehicles x 3 images and a random model: the 10 draws do not all agree (std > 0)."""
    code, out, err = _run(capsys, "eval", "--checkpoint", ckpt, "--dataset", "vehicleid", "--root", vehicleid,
                          "--test-size", "large", "--no-cache", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["mAP"]["std"] > 0 and got["R1"]["std"] > 0 and 0 < got["mAP"]["mean"] < 1


@pytest.mark.parametrize("extra, message", [
    (("--rerank",), "--rerank is not defined for the VehicleID protocol"),
    (("--per-query", "x.csv"), "--per-query is not defined for the VehicleID protocol"),
])
def test_options_that_do_not_apply_are_refused(vehicleid, ckpt, tmp_path, extra, message, capsys):
    code, out, err = _run(capsys, "eval", "--checkpoint", ckpt, "--dataset", "vehicleid", "--root", vehicleid,
                          "--no-cache", *extra)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_test_size_needs_vehicleid_and_a_known_size(vehicleid, ckpt, capsys):
    from tests.synthetic import make_market

    market = make_market(vehicleid.parent / "market")
    code, out, err = _run(capsys, "eval", "--checkpoint", ckpt, "--dataset", "market1501", "--root", market,
                          "--test-size", "small", "--no-cache")
    assert code == 2 and "--test-size applies only to --dataset vehicleid, got --dataset market1501" in err
    with pytest.raises(SystemExit):
        cli.main(["eval", "--checkpoint", str(ckpt), "--dataset", "vehicleid", "--root", str(vehicleid),
                  "--test-size", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err
