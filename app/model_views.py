"""Widgets, helpers and renderers of the model-centred pages: rank browser, embeddings, search, evaluate.

Pages stay thin: they pick options with widgets and call these, which call ``esnet.api``
(through ``app.cache``) and draw with ``app.viz_model``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from app import cache, state, viz, viz_model
from esnet import api

EXPECTED_ERRORS = (api.CheckpointError, api.DatasetError, api.RunDirError, api.ImageError, ValueError, OSError)
"""What a bad checkpoint, dataset, path or image raises through the façade: shown on the page, never a traceback."""

SALIENCY_CHOICES = {"similarity": "similarity", "own CAM": "cam", "Grad-CAM": "gradcam"}
"""Search page radio label -> saliency kind (``similarity`` = ``api.pair_saliency``, else ``api.image_saliency``)."""

ORDERS = ("worst first (AP)", "by query id")


@contextmanager
def shown_errors(what: str) -> Iterator[None]:
    """Turn an expected failure inside the block into ``st.error("<what>: <reason>")`` and stop the page."""
    try:
        yield
    except EXPECTED_ERRORS as e:
        st.error(f"{what}: {e}")
        st.stop()


@dataclass(frozen=True)
class Target:
    """The checkpoint and the dataset a model page works on.

    Attributes:
        run: run name (sidebar).
        path: the run directory (``api.load_inference`` loads its last.pt; best.pt is test-selected
            and never the default).
        dataset: dataset name (the run's config; ``demo`` when it names none).
        root: dataset root (sidebar).
    """

    run: str
    path: Path
    dataset: str
    root: Path


def target() -> Target:
    """The sidebar's run and dataset root; stops the page with a message when either is unusable."""
    sel = state.current()
    path = state.require_run(sel)
    if sel.dataset_root is None:
        st.warning(sel.dataset_problem)
        st.stop()
    row = sel.runs.loc[sel.runs["run"] == sel.run]
    dataset = str(row["dataset"].iloc[0]) if "dataset" in row and row["dataset"].iloc[0] else "demo"
    st.caption(f"Run **{sel.run}** · dataset **{dataset}** at `{sel.dataset_root}` (change both in the sidebar)")
    need = cache.page_needs(path, dataset, sel.dataset_root)
    if need:
        with_model = api.runs_with_checkpoint(sel.runs)
        st.info(need + (f" Runs here that have one: {', '.join(with_model)}." if with_model and "checkpoint" in need
                        else ""))
        st.stop()
    return Target(run=sel.run, path=path, dataset=dataset, root=sel.dataset_root)


def report(t: Target, *, rerank: bool = False, flip: bool = False, feature: str | None = None) -> api.EvalReport:
    """The cached evaluation of ``t`` (``feature``: test embedding, None = the run's), or an on-page error."""
    with shown_errors(f"Cannot evaluate run {t.run!r} on {t.dataset!r} at {t.root}"):
        return cache.evaluation(t.path, t.dataset, t.root, rerank=rerank, flip=flip, feature=feature)


def checkpoint_label(path: str) -> str:
    """``checkpoint `path` `` for captions; a run's best.pt adds that its epoch was chosen on the test split."""
    note = f" · **{api.TEST_SELECTED}** (best.pt: the epoch with the best test mAP)" if api.is_test_selected(path) else ""
    return f"checkpoint `{path}`{note}"


# --- evaluate: VehicleID protocol ------------------------------------------------------------
VEHICLEID_LISTS = {"small": "small (800 vehicles)", "medium": "medium (1,600)", "large": "large (2,400)"}
"""Evaluate page test-list choices for a VehicleID run, as labelled there."""


def vehicleid_table(rep: api.VehicleIDReport) -> pd.DataFrame:
    """One row: test list, then R1 / R5 / R10 / mAP as ``mean ± std`` percent strings over the draws."""
    row = {"test list": rep.test_size}
    row.update({k: f"{100 * m:.2f} ± {100 * s:.2f}" for k, (m, s) in rep.summary.items()})
    return pd.DataFrame([row])


def render_vehicleid(t: Target) -> None:
    """The Evaluate page for a run on VehicleID: its protocol (random gallery draws), mean ± std and CMC."""
    c1, c2 = st.columns(2)
    size = c1.selectbox("Test list", list(VEHICLEID_LISTS), key="eval_vehicleid_size",
                        format_func=VEHICLEID_LISTS.get, help="VehicleID's test_list_800/1600/2400.txt")
    flip = c2.checkbox("Flip test (average with the mirror image)", key="eval_flip")
    with shown_errors(f"Cannot evaluate run {t.run!r} on VehicleID at {t.root}"):
        rep = cache.vehicleid_evaluation(t.path, t.root, test_size=size, flip=flip)
    st.dataframe(vehicleid_table(rep), hide_index=True, width="stretch",
                 column_config={k: st.column_config.TextColumn(f"{k} (%)") for k in ("R1", "R5", "R10", "mAP")})
    st.caption(f"VehicleID protocol: {rep.num_images} images of {rep.num_ids} vehicles; each of {rep.repeats} draws "
               f"(seed {rep.seed}) takes one random gallery image per vehicle and queries with the rest · mean ± std "
               f"over the draws · {checkpoint_label(rep.checkpoint)}")
    for path, reason in rep.skipped:
        st.warning(f"Skipped unreadable image {path}: {reason}")
    st.subheader("CMC (mean over the draws)")
    st.plotly_chart(viz_model.cmc_figure({VEHICLEID_LISTS[size]: rep.result.cmc_mean}), width="stretch")


FEATURE_LABELS = {"concat": "both branches (concat)", "global": "global branch", "erase": "erasing branch"}
"""Test-feature choices on the Evaluate page, as labelled there."""


def feature_choices(inf: api.Inference) -> list[str]:
    """The test features a loaded run can be scored with, its own first."""
    own = inf.config.model.test_feature
    if inf.config.model.erasing == "off":
        return [own]
    return [own] + [f for f in FEATURE_LABELS if f != own]


def inference(t: Target) -> api.Inference:
    """The run's cached model, or an on-page error."""
    with shown_errors(f"Cannot load the checkpoint of run {t.run!r}"):
        return cache.inference(t.path)


def _image(path: str) -> Image.Image | None:
    try:
        return api.read_image(path)
    except api.ImageError:
        return None


# --- rank browser ------------------------------------------------------------------------------
def ordered_queries(per_query: pd.DataFrame, order: str) -> pd.DataFrame:
    """``per_query`` (query, path, pid, camid, camera, ap, first_hit, ...) in display order.

    ``worst first (AP)``: scored queries by AP ascending (ties: later first hit first), then the
    queries without a valid match. ``by query id``: by identity, then camera, then row.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if order == ORDERS[0]:
        keyed = per_query.assign(_invalid=~per_query["valid"].astype(bool))
        out = keyed.sort_values(["_invalid", "ap", "first_hit", "query"], ascending=[True, True, False, True],
                                kind="stable").drop(columns="_invalid")
    else:
        out = per_query.sort_values(["pid", "camid", "query"], kind="stable")
    return out.reset_index(drop=True)


def query_label(row: pd.Series | dict) -> str:
    """``#12 · id 34 · cam 2 · AP 0.41 · first hit 3`` for the query picker (camera as in the file
    name, first hit a 1-based rank, both as ``per_query`` holds them)."""
    if not bool(row["valid"]):
        return f"#{row['query']} · id {row['pid']} · {viz.cam_text(row['camera'])} · no valid match"
    return (f"#{row['query']} · id {row['pid']} · {viz.cam_text(row['camera'])} · AP {row['ap']:.2f}"
            f" · first hit {int(row['first_hit'])}")


def query_picker(queries: pd.DataFrame, order: str, *, rerank: bool) -> pd.Series:
    """The Rank browser's query picker over ``queries`` (``ordered_queries``); returns the picked row.

    Its labels carry the AP and first hit of the scoring shown (re-ranked or not). Streamlit sends
    a selectbox's value to the browser as its label, so a widget whose labels change under one
    key keeps showing the old label there: the key names the scoring too. Toggling re-ranking
    keeps the picked query; changing the order starts from that order's first query.
    """
    key = f"rank_query_{order}_{'reranked' if rerank else 'cosine'}"
    index = 0
    carried = st.session_state.get("rank_query_pick")  # (order, query) picked on the last run
    if key not in st.session_state and carried is not None and carried[0] == order:
        hit = queries.index[queries["query"] == carried[1]]
        index = int(hit[0]) if len(hit) else 0
    labels = [query_label(row) for row in queries.to_dict("records")]  # once, not per option per rerun via .iloc
    pos = st.selectbox(f"Query ({len(queries)})", range(len(queries)), index=index, key=key,
                       format_func=labels.__getitem__)
    row = queries.iloc[pos]
    st.session_state["rank_query_pick"] = (order, int(row["query"]))
    return row


def _hit_caption(hit: pd.Series) -> str:
    mark = "ignored" if hit["ignored"] else ("✓" if hit["correct"] else "✗")
    rank = "–" if hit["ignored"] else f"#{hit['rank']}"
    # One short item a line: the tiles are narrow (11 a row), a longer line wraps mid-phrase.
    return f"{rank} {mark}  \nd={hit['distance']:.3f}  \nid {hit['pid']}  \n{viz.cam_text(hit['camera'])}"


def ranking_strip(query_path: str, query_caption: str, ranking: pd.DataFrame, *, per_row: int = 11) -> None:
    """The query (blue frame) then its ranked gallery: green = same id, red = another, grey = ignored."""
    tiles = [(query_path, viz_model.QUERY, query_caption)]
    tiles += [(h["path"], viz_model.hit_colour(h["correct"], h["ignored"]), _hit_caption(h))
              for _, h in ranking.iterrows()]
    for start in range(0, len(tiles), per_row):
        cols = st.columns(per_row)
        for col, (path, colour, caption) in zip(cols, tiles[start:start + per_row]):
            im = _image(path)
            if im is None:
                col.warning(f"unreadable: {api.printable(Path(path).name)}")
            else:
                col.image(viz_model.bordered(im, colour), caption=caption, width="stretch")


def pair_view(t: Target, query_path: str, match_path: str, *, query_caption: str, match_caption: str,
              center: np.ndarray | None = None) -> None:
    """Query and match side by side with their similarity saliency overlays.

    ``center``: the gallery's ``api.embedding_center``; the maps then show what the pair shares
    beyond the average gallery image.
    """
    q_im, m_im = _image(query_path), _image(match_path)
    if q_im is None or m_im is None:
        st.error(f"Cannot read {api.printable(query_path if q_im is None else match_path)}")
        return
    with shown_errors("Cannot compute the similarity saliency"):
        q_heat, m_heat = cache.pair_heat(t.path, query_path, q_im, match_path, m_im, center)
    cols = st.columns(4)
    for col, im, caption in zip(cols, (q_im, viz_model.overlay(q_im, q_heat), m_im, viz_model.overlay(m_im, m_heat)),
                                (query_caption, "query: what drives the similarity", match_caption,
                                 "match: what drives the similarity")):
        col.image(viz_model.bordered(im, viz_model.NEUTRAL, height=256, width=2), caption=caption, width=132)
    if center is not None:
        st.caption("Grad-CAM of the cosine similarity, each image taken along its partner's embedding minus the "
                   "gallery's mean embedding: what the two share beyond the average gallery image.")


# --- embedding explorer --------------------------------------------------------------------------
def picked_row(event: object) -> int | None:
    """The frame row of the first point in a plotly selection event (``customdata[0]``), or None."""
    try:
        points = event["selection"]["points"]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    for p in points:
        data = p.get("customdata") if isinstance(p, dict) else None
        if data:
            return int(data[0])
    return None


def neighbours_strip(frame: pd.DataFrame, row: int, neighbours: pd.DataFrame) -> None:
    """The picked image (blue) and its nearest neighbours, green when they share its identity."""
    me = frame.iloc[row]
    tiles = [(me["path"], viz_model.QUERY, f"picked · id {me['pid']} · {viz.cam_text(me['camera'])} · {me['split']}")]
    tiles += [(n["path"], viz_model.hit_colour(n["pid"] == me["pid"]),
               f"d={n['distance']:.3f} · id {n['pid']} · {viz.cam_text(n['camera'])} · {n['split']}")
              for _, n in neighbours.iterrows()]
    cols = st.columns(len(tiles))
    for col, (path, colour, caption) in zip(cols, tiles):
        im = _image(path)
        if im is not None:
            col.image(viz_model.bordered(im, colour), caption=caption, width="stretch")


# --- search ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Upload:
    """One decoded query upload: its name, sha256 of the bytes (cache key) and RGB image."""

    name: str
    digest: str
    image: Image.Image


@dataclass(frozen=True)
class SearchOutcome:
    """What a search of uploaded files produced.

    Attributes:
        queries: the uploads that decoded, in upload order.
        errors: one message per upload that could not be read (file name + reason).
        result: ``api.SearchResult`` over ``queries`` (row i = queries[i]); None when none decoded.
    """

    queries: tuple[Upload, ...]
    errors: tuple[str, ...] = ()
    result: api.SearchResult | None = field(default=None)


MAX_UPLOADS = 16
"""Query images searched per request; more wait for another search (one session must not hold the server for minutes)."""


def search_uploads(inf: api.Inference, gallery: api.Gallery, files: Sequence[tuple[str, bytes]], *,
                   topk: int = 10) -> SearchOutcome:
    """Decode uploaded files and rank the gallery for each one that is a readable image.

    At most :data:`MAX_UPLOADS` files are read; for more, the first ones are searched and
    ``errors`` says how many were left out and why.

    Args:
        inf: the model (``app.cache.inference``).
        gallery: the indexed gallery (``app.cache.gallery``), embedded by ``inf``.
        files: (file name, file bytes) per upload.
        topk: hits per query (capped at the gallery size).
    Returns:
        ``SearchOutcome``; unreadable files are reported in ``errors``, never raised.
    """
    queries, errors = [], []
    if len(files) > MAX_UPLOADS:
        errors.append(f"{len(files)} images uploaded, at most {MAX_UPLOADS} are searched at once: searched the first "
                      f"{MAX_UPLOADS}, left out {len(files) - MAX_UPLOADS} (from {api.printable(files[MAX_UPLOADS][0])!r} "
                      "on); remove some and search again for the rest")
        files = files[:MAX_UPLOADS]
    for name, data in files:
        try:
            queries.append(Upload(name, hashlib.sha256(data).hexdigest(), api.read_image(data, name=name)))
        except api.ImageError as e:
            errors.append(str(e))
    if not queries:
        return SearchOutcome((), tuple(errors))
    result = api.search_images(inf, gallery, [q.image for q in queries], topk=min(topk, len(gallery)))
    return SearchOutcome(tuple(queries), tuple(errors), result)


def search_hits(t: Target, upload: Upload, hits: pd.DataFrame, *, saliency: str, threshold: float,
                per_row: int = 8, center: np.ndarray | None = None) -> None:
    """One uploaded query and its ranked hits, each with the chosen saliency overlay.

    ``center``: the gallery's ``api.embedding_center`` for the similarity saliency.

    Frames: green = distance <= ``threshold`` ("same person"), red = above it.
    """
    kind = SALIENCY_CHOICES[saliency]
    tiles = []
    q_heat_cam = None if kind == "similarity" else cache.image_heat(t.path, kind, upload.digest, upload.image)
    for _, h in hits.iterrows():
        im = _image(h["path"])
        if im is None:
            continue
        if kind == "similarity":
            q_heat, heat = cache.pair_heat(t.path, upload.digest, upload.image, h["path"], im, center)
        else:
            q_heat, heat = q_heat_cam, cache.image_heat(t.path, kind, h["path"], im)
        same = h["distance"] <= threshold
        colour = viz_model.RIGHT if same else viz_model.WRONG
        caption = (f"#{h['rank']} d={h['distance']:.3f} · {'same person' if same else 'different'}  \n"
                   f"id {h['pid']} · {viz.cam_text(h['camera'])}")
        tiles.append((viz_model.bordered(viz_model.overlay(im, heat), colour), caption, q_heat))
    head = st.columns([1, 1, 8])
    head[0].image(viz_model.bordered(upload.image, viz_model.QUERY), caption=upload.name, width="stretch")
    if tiles:
        head[1].image(viz_model.bordered(viz_model.overlay(upload.image, tiles[0][2]), viz_model.QUERY),
                      caption=f"query {saliency}" + (" vs #1" if kind == "similarity" else ""), width="stretch")
    with head[2]:
        nearest = float(hits["distance"].min()) if len(hits) else float("nan")
        if not len(hits) or nearest > threshold:
            st.warning(f"**No match in this gallery**: the nearest image is at distance {nearest:.3f}, above the "
                       f"threshold {threshold:.3f}, so no gallery image is called the same person.")
        else:
            st.success(f"{int((hits['distance'] <= threshold).sum())} of the top {len(hits)} are within the "
                       f"threshold {threshold:.3f} (same person at this operating point).")
        for start in range(0, len(tiles), per_row):
            cols = st.columns(per_row)
            for col, (im, caption, _) in zip(cols, tiles[start:start + per_row]):
                col.image(im, caption=caption, width="stretch")


def search_header(t: Target, inf: api.Inference, rep: api.EvalReport) -> None:
    """Say which model answers (and what it was trained on) and which gallery it searches."""
    card = api.model_card(inf)
    line = (f"**Model** `{t.run}`: {card.architecture}, trained on **{card.trained_on}** ({card.num_ids} identities)."
            f"  \n**Gallery**: {rep.num_gallery} images of {api.DATASET_LABELS.get(t.dataset, t.dataset)} at "
            f"`{api.printable(str(t.root))}`.")
    if card.synthetic:
        st.warning(line + "  \nThis demo model has only ever seen synthetic figures: its answers about photos of "
                   "real people mean nothing. Choose a run trained on real data (e.g. `make results`) for those.")
    else:
        st.info(line)


def operating_point(rep: api.EvalReport, *, key: str) -> float:
    """Radio of calibrated "same person?" thresholds (default FPR 1 %); returns the distance threshold."""
    points = api.operating_points(rep)
    labels = list(points["point"])
    choice = st.radio("Same person if the distance is within the threshold calibrated at", labels,
                      index=labels.index("FPR 1%") if "FPR 1%" in labels else 0, horizontal=True, key=key,
                      help="Calibrated on this model's own query x gallery pairs: FPR is the share of "
                           "different-person pairs accepted, TPR the share of same-person pairs accepted.")
    row = points.loc[points["point"] == choice].iloc[0]
    st.caption(f"Threshold **{row['threshold']:.3f}**: on {rep.dataset} query × gallery pairs it accepts "
               f"**{100 * row['fpr']:.1f}%** of different-person pairs (FPR) and {100 * row['tpr']:.1f}% of "
               f"same-person pairs (TPR).")
    return float(row["threshold"])


# --- evaluate ------------------------------------------------------------------------------------
def metrics_table(summary: dict[str, float], label: str) -> pd.DataFrame:
    """One row: setting, R1, R5, R10, mAP, mINP in percent."""
    return pd.DataFrame([{"setting": label, **{k: 100.0 * float(summary[k]) for k in ("R1", "R5", "R10", "mAP",
                                                                                         "mINP")}}])


def printable_paths(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose ``path`` column is safe to display (see ``api.printable``)."""
    return frame.assign(path=frame["path"].map(lambda p: api.printable(str(p)))) if "path" in frame else frame


def per_query_csv(rep: api.EvalReport) -> bytes:
    """The report's per-query results as CSV bytes (one row per query)."""
    return printable_paths(rep.per_query).to_csv(index=False).encode("utf-8")

