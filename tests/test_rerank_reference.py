"""Must show: ``esnet eval --rerank --json`` gives the mAP of the reference re-ranking plus evaluation.

The reference is torchreid's own code (its ``re_ranking`` and ``evaluate_rank`` files, loaded by
benchmarks/peers.py; pinned test-only in requirements-peers.txt), run on the same features as the
CLI: the demo checkpoint's embeddings of the demo query and gallery, read from the shared cache.
"""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from esnet import api, cli
from esnet.metrics import pairwise_distance

_PEERS = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"
_spec = importlib.util.spec_from_file_location("esnet_bench_peers", _PEERS)
peers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(peers)


def test_eval_rerank_json_equals_torchreid_rerank_and_evaluate(demo_checkpoint, demo_data, embedding_cache, capsys):
    rerank, rank = peers.torchreid_module("rerank"), peers.torchreid_module("rank")
    if rerank is None:
        pytest.skip(peers.TORCHREID_ABSENT)
    code = cli.main(["eval", "--checkpoint", str(demo_checkpoint), "--dataset", "demo", "--root", str(demo_data),
                     "--cache-dir", str(embedding_cache), "--rerank", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    got = json.loads(out)
    assert got["rerank"] is True and got["num_query"] == 180 and got["num_gallery"] == 840

    inf = api.load_inference(demo_checkpoint, device="cpu")
    q = api.embed(inf, dataset="demo", root=demo_data, split="query", cache_dir=embedding_cache)
    g = api.embed(inf, dataset="demo", root=demo_data, split="gallery", cache_dir=embedding_cache)
    qf, gf = np.asarray(q.features), np.asarray(g.features)
    dist = rerank.re_ranking(pairwise_distance(qf, gf), pairwise_distance(qf, qf), pairwise_distance(gf, gf),
                             k1=20, k2=6, lambda_value=0.3)
    keep = g.pids != -1  # torchreid's loaders drop junk; esnet's evaluate ignores it: the same protocol
    cmc, m_ap = rank.evaluate_rank(dist[:, keep], q.pids, g.pids[keep], q.camids, g.camids[keep], max_rank=50,
                                   use_cython=False)
    assert got["mAP"] == pytest.approx(float(m_ap), abs=1e-4)
    assert got["R1"] == pytest.approx(float(cmc[0]), abs=1e-4)
    assert got["cmc"][:10] == pytest.approx(cmc[:10].tolist(), abs=1e-4)

    code = cli.main(["eval", "--checkpoint", str(demo_checkpoint), "--dataset", "demo", "--root", str(demo_data),
                     "--cache-dir", str(embedding_cache), "--json"])
    plain = json.loads(capsys.readouterr().out)
    assert code == 0 and plain["mAP"] != pytest.approx(got["mAP"], abs=1e-3)  # re-ranking changed the result
