"""The Evaluate page's test-feature switch: a branch cut out of the concat report equals embedding that branch."""
from pathlib import Path

import numpy as np
import pytest
import torch

from esnet import evaluation
from esnet.checkpoint import save_checkpoint
from esnet.config import Config, override
from esnet.embedding import load_inference
from esnet.model import build_model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = override(Config(), {"model.backbone": "mobilenet_v2", "data.height": 32, "data.width": 16,
                              "data.dataset": "market1501"})
    torch.manual_seed(0)
    model = build_model(cfg.model, 8)
    with torch.no_grad():  # BNNecks with distinct statistics, so the two halves differ
        for bn in (model.global_head.bnneck, model.erase_head.bnneck):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, model=model, optimizer=None, scheduler=None, epoch=1, config=cfg, num_classes=8)
    return path


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("feature", ["global", "erase"])
def test_feature_view_equals_embedding_the_branch(ckpt: Path, market: Path, feature: str, flip: bool) -> None:
    concat = evaluation.evaluate_dataset(load_inference(ckpt, "cpu"), "market1501", str(market), flip=flip)
    direct = evaluation.evaluate_dataset(load_inference(ckpt, "cpu", test_feature=feature), "market1501", str(market),
                                         flip=flip)
    view = evaluation.feature_view(concat, feature)
    assert concat.query.features.shape[1] == 2 * view.query.features.shape[1]
    assert view.test_feature == feature and view.flip == flip
    np.testing.assert_allclose(view.query.features, direct.query.features, atol=1e-5)
    np.testing.assert_allclose(view.gallery.features, direct.gallery.features, atol=1e-5)
    assert view.summary == pytest.approx(direct.summary, abs=1e-6)
    other = evaluation.branch_features(concat.query, "erase" if feature == "global" else "global")
    assert not np.allclose(view.query.features, other.features, atol=1e-3)  # the right half, not the other


def test_feature_view_refuses_a_single_branch_report(ckpt: Path, market: Path) -> None:
    glob = evaluation.evaluate_dataset(load_inference(ckpt, "cpu", test_feature="global"), "market1501", str(market))
    assert evaluation.feature_view(glob, "global") is glob
    with pytest.raises(ValueError, match=r"a 'erase' view needs a 'concat' report \(both branches\), got 'global'"):
        evaluation.feature_view(glob, "erase")
    with pytest.raises(ValueError, match=r"feature must be one of \['erase', 'global'\], got 'both'"):
        evaluation.branch_features(glob.query, "both")
