"""2-D projections: shape, dtype, determinism per seed, separated clusters stay separated, bad inputs."""
import time

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from esnet.projection import FRAME_COLUMNS, project, projection_frame, warm_up


def _blobs(per: int = 20, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """3 tight Gaussian blobs around orthogonal directions: (3 * per, d) float32 and labels (3 * per,)."""
    rng = np.random.default_rng(seed)
    centers = np.zeros((3, d), dtype=np.float32)
    centers[[0, 1, 2], [0, 1, 2]] = 10.0
    labels = np.repeat(np.arange(3), per)
    x = centers[labels] + rng.normal(scale=0.5, size=(3 * per, d)).astype(np.float32)
    return x.astype(np.float32), labels


def _nearest_centroid_accuracy(xy: np.ndarray, labels: np.ndarray) -> float:
    centroids = np.stack([xy[labels == k].mean(axis=0) for k in range(3)])  # (3, 2)
    pred = np.linalg.norm(xy[:, None] - centroids[None], axis=2).argmin(axis=1)
    return float((pred == labels).mean())


def _check_separated(xy: np.ndarray, labels: np.ndarray) -> None:
    assert xy.shape == (labels.size, 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
    assert silhouette_score(xy, labels) > 0.5
    assert _nearest_centroid_accuracy(xy, labels) == 1.0


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_pca_and_tsne_separate_blobs_deterministically(method):
    x, labels = _blobs()
    a = project(x, method=method, seed=3)
    _check_separated(a, labels)
    np.testing.assert_array_equal(a, project(x, method=method, seed=3))


def test_pca_matches_the_leading_components_of_normalised_rows():
    x, _ = _blobs(per=5)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    xc = xn - xn.mean(axis=0)
    _, s, vt = np.linalg.svd(xc.astype(np.float64), full_matrices=False)
    ref = xc @ vt[:2].T  # (N, 2), up to the sign of each axis
    out = project(x, method="pca")
    for k in range(2):
        sign = np.sign(out[:, k] @ ref[:, k])
        np.testing.assert_allclose(out[:, k], sign * ref[:, k], atol=1e-5)
    assert s[0] > s[1]


def test_tsne_runs_on_fewer_points_than_the_perplexity():
    x, labels = _blobs(per=2)  # N = 6 < perplexity 30: clamped to 5/3
    out = project(x, method="tsne", perplexity=30.0)
    assert out.shape == (6, 2) and out.dtype == np.float32 and np.isfinite(out).all()


def test_scale_of_rows_does_not_matter():
    x, _ = _blobs(per=4)
    scaled = x * np.linspace(0.1, 10.0, len(x), dtype=np.float32)[:, None]
    np.testing.assert_allclose(project(x, method="pca"), project(scaled, method="pca"), atol=1e-5)


@pytest.mark.slow  # the first UMAP call of the process pays numba's JIT compile (~15-30 s)
def test_umap_separates_blobs_deterministically_and_warm_up_is_idempotent():
    first = warm_up()
    again = warm_up()
    assert first > 0.0 and again < 5.0
    x, labels = _blobs()  # 60 points
    a = project(x, method="umap", seed=7)
    _check_separated(a, labels)
    np.testing.assert_array_equal(a, project(x, method="umap", seed=7))
    small = project(x[:8], method="umap", seed=7, n_neighbors=15)  # clamped to N - 1 = 7
    assert small.shape == (8, 2) and np.isfinite(small).all()
    start = time.perf_counter()
    project(x, method="umap", seed=7, metric="cosine")
    assert time.perf_counter() - start < 10.0  # compiled once: cosine needs no new kernels


def test_projection_frame_columns_and_metadata():
    x, labels = _blobs(per=3)
    n = len(x)
    frame = projection_frame(
        x, pids=labels.tolist(), camids=[i % 2 for i in range(n)], splits=["query"] * 3 + ["gallery"] * (n - 3),
        paths=[f"img/{i}.jpg" for i in range(n)], method="pca", seed=1,
    )
    assert tuple(frame.columns) == FRAME_COLUMNS and len(frame) == n
    assert frame.attrs == {"method": "pca", "seed": 1}
    np.testing.assert_array_equal(frame[["x", "y"]].to_numpy(), project(x, method="pca", seed=1))
    assert frame["x"].dtype == np.float32 and frame["pid"].dtype == np.int64 and frame["camid"].dtype == np.int64
    assert frame["pid"].tolist() == labels.tolist() and frame["camid"].tolist()[:3] == [0, 1, 0]
    assert frame["split"].tolist()[2:4] == ["query", "gallery"] and frame["path"].iloc[4] == "img/4.jpg"


def test_projection_frame_rejects_metadata_of_the_wrong_length():
    x, _ = _blobs(per=2)
    with pytest.raises(ValueError, match=r"camids must have length N=6.*got 5"):
        projection_frame(x, pids=[0] * 6, camids=[0] * 5, splits=["q"] * 6, paths=["p"] * 6, method="pca")
    with pytest.raises(TypeError, match="splits must be a sequence"):
        projection_frame(x, pids=[0] * 6, camids=[0] * 6, splits="query", paths=["p"] * 6, method="pca")


@pytest.mark.parametrize(
    "features, kw, err, match",
    [
        (np.ones((2, 4), np.float32), {}, ValueError, r"at least 3 points.*N=2"),
        (np.ones((5,), np.float32), {}, ValueError, r"\(N, D\), got shape \(5,\)"),
        (np.ones((5, 1), np.float32), {}, ValueError, r"2 feature dimensions.*D=1"),
        (np.ones((5, 4), np.int64), {}, ValueError, "floating array, got dtype int64"),
        (np.array([[1, 0], [0, 1], [np.nan, 1], [1, 1]], np.float32), {}, ValueError, r"finite: rows \[2\]"),
        (np.array([[1, 0], [0, 1], [0, 0], [1, 1]], np.float32), {}, ValueError, r"all-zero feature rows \[2\]"),
        (np.eye(3, dtype=np.float32), {"method": "umap"}, ValueError, r"UMAP needs N >= 4.*N=3"),
        (np.eye(4, dtype=np.float32), {"method": "mds"}, ValueError, r"method must be one of.*'mds'"),
        (np.eye(4, dtype=np.float32), {"metric": "l1"}, ValueError, r"metric must be one of.*'l1'"),
        (np.eye(4, dtype=np.float32), {"n_neighbors": 1}, ValueError, "n_neighbors must be an integer >= 2, got 1"),
        (np.eye(4, dtype=np.float32), {"seed": -1}, ValueError, r"seed must be an integer in \[0, 2\*\*32\), got -1"),
        (np.eye(4, dtype=np.float32), {"min_dist": 1.5}, ValueError, r"min_dist must be in \[0, 1\].*1.5"),
        (np.eye(4, dtype=np.float32), {"perplexity": 0.0}, ValueError, "perplexity must be > 0, got 0.0"),
        (np.eye(4, dtype=np.float32), {"pca_dims": 1}, ValueError, "pca_dims must be an integer >= 2, got 1"),
        ([[1.0, 0.0]] * 4, {}, TypeError, "features must be a numpy array, got list"),
    ],
)
def test_bad_inputs_raise_naming_the_value(features, kw, err, match):
    with pytest.raises(err, match=match):
        project(features, **kw)
