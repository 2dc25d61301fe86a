"""AppTest of the Rank browser on the demo checkpoint and demo data."""
import re
from pathlib import Path

import pytest

from app import model_views
from esnet import api
from tests.test_app.model_pages import broken_run, demo_env, errors, image_captions, images, open_page, select_run

__all__ = ["demo_env"]  # the fixture, used by name


@pytest.fixture(scope="module")
def report(demo_env) -> api.EvalReport:
    return api.evaluate_checkpoint(demo_env.run_dir, "demo", demo_env.data_root, cache_dir=demo_env.cache_dir)


def _shown_query(at) -> int:
    """The query number in the page's 'Query #<n>: ...' subheader."""
    head = next(h.value for h in at.subheader if h.value.startswith("Query #"))
    return int(head.split("#", 1)[1].split(":", 1)[0])


def test_worst_query_first_with_its_ranked_gallery(demo_env, report) -> None:
    at = open_page("rank_browser")
    assert not at.exception, at.exception
    assert not errors(at)
    worst = report.per_query.loc[report.per_query["valid"]].sort_values("ap", kind="stable").iloc[0]
    assert _shown_query(at) == worst["query"]
    assert report.per_query.loc[_shown_query(at), "ap"] == pytest.approx(report.per_query["ap"].min())
    # The query, its top-10 (plus ignored same-camera items) and the 4 pair-saliency tiles.
    ranking = api.query_ranking(report, int(worst["query"]), topk=10)
    assert len(images(at)) == 1 + len(ranking) + 4
    assert at.radio(key="rank_pick").value == 1
    captions = image_captions(at)
    assert captions[0].startswith("query")
    for caption, (_, hit) in zip(captions[1:], ranking.iterrows()):
        assert f"d={hit['distance']:.3f}" in caption and f"id {hit['pid']}" in caption
        assert ("ignored" in caption) if hit["ignored"] else (("✓" in caption) == hit["correct"])
        # the camera of the file name (0004_c6s1_... -> cam 6), not the 0-based camid
        assert caption.endswith(f"cam {_file_camera(hit['path'])}") and hit["camera"] == hit["camid"] + 1
    head = next(h.value for h in at.subheader if h.value.startswith("Query #"))
    assert head.endswith(f"camera {_file_camera(worst['path'])}")
    picker = at.selectbox(key="rank_query_worst first (AP)_cosine")
    assert f"cam {_file_camera(worst['path'])} · AP {worst['ap']:.2f} · first hit {worst['first_hit']}" in \
        picker.options[picker.index]
    assert worst["first_hit"] == report.result.first_hit[worst["query"]] + 1  # 1-based rank for people


def _file_camera(path: str) -> int:
    """The camera number in a Market-style file name (``0004_c6s1_...`` -> 6)."""
    return int(re.match(r"\d+_c(\d)s", Path(path).name).group(1))


def test_order_changes_the_first_query(demo_env, report) -> None:
    at = open_page("rank_browser")
    first_worst = _shown_query(at)
    at.radio(key="rank_order").set_value("by query id").run()
    assert not at.exception, at.exception
    by_id = report.per_query.sort_values(["pid", "camid", "query"], kind="stable").iloc[0]
    assert _shown_query(at) == by_id["query"] != first_worst


def test_topk_and_the_explained_match(demo_env, report) -> None:
    at = open_page("rank_browser")
    at.slider(key="rank_topk").set_value(5).run()
    assert not at.exception, at.exception
    q = _shown_query(at)
    assert len(images(at)) == 1 + len(api.query_ranking(report, q, topk=5)) + 4
    at.radio(key="rank_pick").set_value(3).run()
    assert not at.exception, at.exception
    match = api.query_ranking(report, q, topk=5).query("rank == 3").iloc[0]
    assert f"#3 · id {match['pid']} · d={match['distance']:.3f}" in image_captions(at)


def test_picker_shows_the_reranked_ap_when_reranking_is_on(demo_env, report) -> None:
    at = open_page("rank_browser")
    picked = _shown_query(at)
    at.checkbox(key="rank_rerank").check().run()
    assert not at.exception, at.exception
    assert _shown_query(at) == picked  # re-ranking keeps the query
    reranked = api.evaluate_checkpoint(demo_env.run_dir, "demo", demo_env.data_root, cache_dir=demo_env.cache_dir,
                                       rerank=True).per_query.loc[picked]
    assert reranked["ap"] != pytest.approx(report.per_query.loc[picked, "ap"], abs=0.005)  # the two differ here
    picker = at.selectbox(key="rank_query_worst first (AP)_reranked")
    label = picker.options[picker.index]
    assert label.startswith(f"#{picked} ·") and f"AP {reranked['ap']:.2f} · first hit {reranked['first_hit']}" in label
    assert image_captions(at)[0] == f"query  \nAP {reranked['ap']:.2f}"  # the strip agrees with the picker
    at.checkbox(key="rank_rerank").uncheck().run()
    picker = at.selectbox(key="rank_query_worst first (AP)_cosine")
    assert f"AP {report.per_query.loc[picked, 'ap']:.2f}" in picker.options[picker.index]


def test_ordered_queries_puts_unscored_queries_last() -> None:
    import pandas as pd

    pq = pd.DataFrame({"query": [0, 1, 2, 3], "path": list("abcd"), "pid": [5, 3, 9, 1], "camid": [0, 1, 0, 2],
                       "camera": [1, 2, 1, 3],
                       "ap": [0.9, 0.1, 0.0, 0.5], "first_hit": [1, 5, -1, 2], "hardest_positive": [1, 10, -1, 4],
                       "num_positives": [2, 2, 0, 1], "valid": [True, True, False, True]})
    assert list(model_views.ordered_queries(pq, "worst first (AP)")["query"]) == [1, 3, 0, 2]
    assert list(model_views.ordered_queries(pq, "by query id")["query"]) == [3, 1, 0, 2]
    with pytest.raises(ValueError, match="order must be one of"):
        model_views.ordered_queries(pq, "best first")


def test_corrupt_checkpoint_is_an_error_on_the_page(demo_env) -> None:
    runs = demo_env.runs_dir.parent / "broken_rank"
    broken_run(runs, "bad", b"PK\x03\x04 truncated zip")
    at = open_page("rank_browser", state=select_run(runs, "bad"))
    assert not at.exception, at.exception
    assert errors(at) and "Cannot evaluate run 'bad'" in errors(at)[0]
