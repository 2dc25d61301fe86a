"""Widgets, helpers and renderers of the Baseline vs ES-Net page (pages/compare.py).

Two runs of the sidebar's runs directory, A and B (by default a baseline without erasing and
an ES-Net run), evaluated on the sidebar's dataset root: where B gains or loses AP query by
query, what both rank for one query, both models' own CAMs, and how widely each one looks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from app import cache, state, viz, viz_compare, viz_model
from app import model_views as mv
from esnet import api

TIE = 1e-6
"""|ΔAP| at or below this counts as a tie (the same ranking of the true matches)."""

EXTREME_COLUMNS = ["query", "pid", "camera", "ap_a", "ap_b", "delta", "first_hit_a", "first_hit_b"]
"""Columns of the wins / losses tables, as ``api.compare_reports`` names them."""

MEASURES = ("coverage", "entropy")


@dataclass(frozen=True)
class Pair:
    """The two runs compared: ``a`` (baseline by default) and ``b`` (ES-Net by default)."""

    a: mv.Target
    b: mv.Target


def with_checkpoint(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``runs`` (``api.runs_frame``) whose run directory holds checkpoints/last.pt."""
    if runs.empty:
        return runs
    has = [(Path(p) / "checkpoints" / "last.pt").is_file() for p in runs["path"]]
    return runs.loc[has].reset_index(drop=True)


def _erasing(runs: pd.DataFrame, name: str) -> str:
    if "erasing" not in runs:
        return ""
    return str(runs.loc[runs["run"] == name, "erasing"].iloc[0])


def default_pair(runs: pd.DataFrame, focused: str | None) -> tuple[str, str]:
    """(A, B) run names among ``runs`` (at least two rows, each with a checkpoint).

    A: the first run with erasing ``off`` (a baseline). B: the focused run when it is an ES-Net run
    (erasing ``salient``), else the first such run. A missing kind is filled with the first other run.
    """
    names = list(runs["run"])
    if len(names) < 2:
        raise ValueError(f"need at least two runs to compare, got {names}")
    kinds = {n: _erasing(runs, n) for n in names}
    b = focused if kinds.get(focused) == "salient" else next((n for n in names if kinds[n] == "salient"), None)
    a = next((n for n in names if kinds[n] == "off" and n != b), None)
    if b is None:
        b = next(n for n in names if n != a)
    if a is None:
        a = next(n for n in names if n != b)
    return a, b


def _run_label(runs: pd.DataFrame, name: str) -> str:
    kind = {"off": "baseline", "salient": "ES-Net"}.get(_erasing(runs, name), _erasing(runs, name) or "?")
    return f"{name} ({kind})"


def _dataset(runs: pd.DataFrame, name: str) -> str:
    row = runs.loc[runs["run"] == name]
    value = row["dataset"].iloc[0] if "dataset" in row else None
    return str(value) if value else "demo"


def pick_pair() -> Pair:
    """Two run pickers (A, B) over the sidebar's runs with a checkpoint; stops the page with one
    sentence when fewer than two have one, when A is B, or when their datasets differ."""
    sel = state.current()
    state.require_runs(sel)
    runs = with_checkpoint(sel.runs)
    if len(runs) < 2:
        have = f"only {runs['run'].iloc[0]!r} has one" if len(runs) else "none has one"
        st.info(f"Comparing needs two runs with a checkpoint (checkpoints/last.pt) in `{sel.runs_dir}`, for example a "
                f"baseline (erasing off) and an ES-Net run (erasing salient); {have}.")
        st.stop()
    if sel.dataset_root is None:
        st.warning(sel.dataset_problem)
        st.stop()
    names = list(runs["run"])
    a, b = default_pair(runs, sel.run)
    for key in ("compare_a", "compare_b"):  # a run that left the runs directory: back to the default
        if st.session_state.get(key) not in (None, *names):
            del st.session_state[key]
    c1, c2 = st.columns(2)
    fmt = lambda n: _run_label(runs, n)  # noqa: E731
    a = c1.selectbox("Run A (baseline)", names, index=names.index(a), key="compare_a", format_func=fmt)
    b = c2.selectbox("Run B (ES-Net)", names, index=names.index(b), key="compare_b", format_func=fmt)
    if a == b:
        st.info("Pick two different runs: A and B are the same run.")
        st.stop()
    da, db = _dataset(runs, a), _dataset(runs, b)
    if da != db:
        st.info(f"{a!r} was trained on {da!r} and {b!r} on {db!r}: pick two runs of the same dataset to compare "
                "them query by query.")
        st.stop()
    st.caption(f"Both evaluated on **{da}** at `{sel.dataset_root}` (change the root in the sidebar)")
    need = cache.page_needs(sel.run_path(a), da, sel.dataset_root)
    if need:
        st.info(need)
        st.stop()
    target = lambda n: mv.Target(run=n, path=sel.run_path(n), dataset=da, root=sel.dataset_root)  # noqa: E731
    return Pair(a=target(a), b=target(b))


def differences(pair: Pair) -> tuple[api.EvalReport, api.EvalReport, pd.DataFrame]:
    """Both cached evaluations and ``api.compare_reports`` of them, or an on-page error."""
    rep_a, rep_b = mv.report(pair.a), mv.report(pair.b)
    with mv.shown_errors(f"Cannot compare {pair.a.run!r} with {pair.b.run!r}"):
        return rep_a, rep_b, api.compare_reports(rep_a, rep_b)


def outcome(diff: pd.DataFrame) -> dict[str, float]:
    """mean ΔAP, and how many queries B wins (ΔAP > TIE), loses (< -TIE) and ties."""
    d = diff["delta"].to_numpy(float)
    return {"mean": float(d.mean()) if d.size else float("nan"), "wins": int((d > TIE).sum()),
            "losses": int((d < -TIE).sum()), "ties": int((abs(d) <= TIE).sum()), "n": int(d.size)}


def extremes(diff: pd.DataFrame, side: str, n: int = 10) -> pd.DataFrame:
    """The ``n`` queries B wins most (``side="wins"``, ΔAP descending) or loses most (``"losses"``, ascending)."""
    if side == "wins":
        out = diff.loc[diff["delta"] > TIE].sort_values(["delta", "query"], ascending=[False, True], kind="stable")
    elif side == "losses":
        out = diff.loc[diff["delta"] < -TIE].sort_values(["delta", "query"], ascending=[True, True], kind="stable")
    else:
        raise ValueError(f"side must be 'wins' or 'losses', got {side!r}")
    return out[EXTREME_COLUMNS].head(n).reset_index(drop=True)


def render_outcome(pair: Pair, diff: pd.DataFrame) -> None:
    """Mean ΔAP and the win / loss / tie counts as metrics, then the ΔAP histogram."""
    o = outcome(diff)
    cols = st.columns(4)
    cols[0].metric("mean ΔAP (B − A)", f"{o['mean']:+.3f}")
    for col, k in zip(cols[1:], ("wins", "losses", "ties")):
        col.metric(f"B {k}" if k != "ties" else "ties", f"{o[k]:,}", help=f"of {o['n']:,} queries scored by both")
    st.plotly_chart(viz_compare.delta_histogram(diff, pair.a.run, pair.b.run), width="stretch")


def render_extremes(pair: Pair, wins: pd.DataFrame, losses: pd.DataFrame) -> None:
    """The two tables side by side: the queries B wins most and loses most."""
    config = {"ap_a": st.column_config.NumberColumn("AP A", format="%.3f"),
              "ap_b": st.column_config.NumberColumn("AP B", format="%.3f"),
              "delta": st.column_config.NumberColumn("ΔAP", format="%+.3f"),
              "first_hit_a": st.column_config.NumberColumn("first hit A"),
              "first_hit_b": st.column_config.NumberColumn("first hit B")}
    for col, title, table in zip(st.columns(2), (f"{pair.b.run} wins most", f"{pair.b.run} loses most"),
                                 (wins, losses)):
        col.markdown(f"**{title}**")
        if table.empty:
            col.caption("none")
        else:
            col.dataframe(table, hide_index=True, width="stretch", column_config=config)


def query_choices(diff: pd.DataFrame, wins: pd.DataFrame, losses: pd.DataFrame) -> list[int]:
    """Query rows to pick from: the wins then the losses (the biggest win first); the first 10 when all tie."""
    rows = list(wins["query"]) + list(losses["query"])
    return [int(q) for q in (rows or list(diff["query"].head(10)))]


def query_label(diff: pd.DataFrame, q: int) -> str:
    """``#12 · id 34 · cam 2 · ΔAP +0.41 (AP 0.20 → 0.61)`` for the query picker."""
    r = diff.set_index("query").loc[q]
    return (f"#{q} · id {r['pid']} · {viz.cam_text(r['camera'])} · ΔAP {r['delta']:+.2f} "
            f"(AP {r['ap_a']:.2f} → {r['ap_b']:.2f})")


def pick_query(where, diff: pd.DataFrame, wins: pd.DataFrame, losses: pd.DataFrame) -> int:
    """The query picker (in container ``where``) over :func:`query_choices`; returns the query row, the
    biggest win by default. A choice that is gone (other runs picked) falls back to the default."""
    choices = query_choices(diff, wins, losses)
    if st.session_state.get("compare_query") not in (None, *choices):
        del st.session_state["compare_query"]
    return int(where.selectbox("Query (B's wins, then its losses)", choices, key="compare_query",
                               format_func=lambda q: query_label(diff, q)))


def render_rankings(pair: Pair, rep_a: api.EvalReport, rep_b: api.EvalReport, q: int, topk: int) -> None:
    """Both models' top-``topk`` for query row ``q``, one strip each, A above B."""
    path = rep_a.per_query.loc[q, "path"]
    for t, rep in ((pair.a, rep_a), (pair.b, rep_b)):
        pq = rep.per_query.loc[q]
        st.markdown(f"**{t.run}** · AP {pq['ap']:.2f} · first hit {pq['first_hit']}")
        mv.ranking_strip(path, "query", api.query_ranking(rep, q, topk=topk), per_row=topk + 1)


def render_cams(pair: Pair, rep_a: api.EvalReport, rep_b: api.EvalReport, q: int, limit: int = 4) -> None:
    """Each model's own CAM on the query and on up to ``limit`` true matches (B's best ranked), A's row above B's."""
    matches = api.true_matches(rep_b, q, limit)
    ranks = {t.run: api.true_matches(rep, q, rep.num_gallery).set_index("path")["rank"]
             for t, rep in ((pair.a, rep_a), (pair.b, rep_b))}
    paths = [rep_a.per_query.loc[q, "path"], *matches["path"]]
    images = [mv._image(p) for p in paths]
    for t in (pair.a, pair.b):
        cols = st.columns(max(11, limit + 2))  # the grid of a top-10 strip: CAM tiles as large as its tiles
        cols[0].markdown(f"**{t.run}**  \nown CAM")
        for i, (col, p, im) in enumerate(zip(cols[1:], paths, images)):
            if im is None:
                col.warning(f"unreadable: {api.printable(Path(p).name)}")
                continue
            with mv.shown_errors(f"Cannot compute the CAM of run {t.run!r}"):
                heat = cache.image_heat(t.path, "cam", p, im)
            caption = "query" if i == 0 else f"true match · rank {ranks[t.run][p]}"
            col.image(viz_model.bordered(viz_model.overlay(im, heat), viz_model.QUERY if i == 0 else viz_model.RIGHT),
                      caption=caption, width="stretch")
    if matches.empty:
        st.caption("No true match (same identity, other camera) in the gallery for this query.")


def spread_sentence(pair: Pair, measure: str, c: dict[str, float]) -> str:
    """``api.compare_attention``'s numbers in one sentence, with what they say."""
    verdict = ("**wider** than" if c["ci_low"] > 0 else "**narrower** than" if c["ci_high"] < 0
               else "**not measurably different** from")
    return (f"On {c['n']:,} query images, the mean {measure} of **{pair.b.run}** is {c['mean_b']:.3f} against "
            f"{c['mean_a']:.3f} for **{pair.a.run}**: a difference of {c['diff']:+.3f} (95 % paired bootstrap interval "
            f"{c['ci_low']:+.3f} to {c['ci_high']:+.3f}), wider on {c['frac_b_wider']:.0%} of the images. On this "
            f"measure B's attention is {verdict} A's.")


def render_spread(pair: Pair, measure: str) -> None:
    """Both models' spread distributions on the query set (progress bars while measured) and the comparison."""
    with mv.shown_errors("Cannot measure the attention spread"):
        frames = [cache.attention_spread(t.path, t.dataset, t.root) for t in (pair.a, pair.b)]
        compared = api.compare_attention(frames[0], frames[1], measure)
    st.plotly_chart(viz_compare.spread_histograms(frames[0], frames[1], measure, pair.a.run, pair.b.run),
                    width="stretch")
    st.markdown(spread_sentence(pair, measure, compared))
