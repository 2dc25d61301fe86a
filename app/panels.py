"""Streamlit renderers for the run-centred pages: take data from ``esnet.api`` / app.cache, draw it.

Pages keep the widgets and the calls into ``esnet.api``; the layout of tables, metric rows and
chart grids lives here so pages stay short.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from app import cache, state, viz
from esnet import api

STATE_ICONS = {"running": ":green[:material/play_circle:]", "finished": ":blue[:material/check_circle:]",
               "failed": ":red[:material/error:]", "unknown": ":gray[:material/help:]",
               "broken": ":orange[:material/warning:]", "starting": ":green[:material/hourglass_top:]",
               "stopped": ":gray[:material/stop_circle:]"}
"""Markdown icons of the run states (material icons render without an emoji font)."""


def _pct(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}%"


def pooling_trio(runs: pd.DataFrame, limit: int = 3) -> list[str]:
    """Runs to compare first on the Pooling page: one per pooling among the salient-erasing (ES-Net) runs.

    Falls back to one per pooling among all runs, then to the first ``limit`` runs. P-pooling
    first, then avg, then max, at most ``limit`` names: of each pooling the first run by name,
    except that of the P-pooling runs the one whose p moved furthest (``p_moved``) is shown.
    """
    if runs.empty:
        return []
    rank = {"p": 0, "avg": 1, "max": 2}
    if "p_moved" in runs.columns:  # stable: among equal movement (or none), the first by name stays first
        moved = runs["p_moved"].where(runs["pool"] == "p").fillna(-1.0)
        runs = runs.assign(_moved=moved).sort_values("_moved", ascending=False, kind="stable").drop(columns="_moved")
    for pool in (runs[runs["erasing"] == "salient"], runs):
        picked = pool.drop_duplicates("pool")
        if len(picked) > 1:
            picked = picked.sort_values("pool", key=lambda s: s.map(rank).fillna(len(rank)), kind="stable")
            return list(picked["run"])[:limit]
    return list(runs["run"])[:limit]


def p_pooling_runs(runs: pd.DataFrame) -> list[str]:
    """Names of the runs that use P-pooling (``pool == "p"``), in table order."""
    if runs.empty or "pool" not in runs.columns:
        return []
    return list(runs.loc[runs["pool"] == "p", "run"])


def runs_table(runs: pd.DataFrame, *, key: str = "runs.table") -> None:
    """``api.runs_frame`` as a table: state, config summary, best mAP/R1 (%), learned p."""
    shown = runs.drop(columns=[c for c in ("path",) if c in runs.columns])
    if "updated" in shown.columns:
        shown = shown.assign(updated=pd.to_datetime(shown["updated"], errors="coerce", utc=True))
    order = ["run", "state", "epochs", "error", "pool", "erasing", "best_mAP", "best_R1", "best_epoch", "p_global",
             "p_erase", "p_moved", "backbone", "dataset", "updated"]
    hidden = {"error"} if "error" in shown.columns and not shown["error"].astype(bool).any() else set()  # no failures
    columns = [c for c in order if c in shown.columns] + [c for c in shown.columns if c not in order]
    # A fixed width for the names: the grid keeps the widths it measured first, so a longer name
    # added later (the pooling page's run chooser) would be cut off.
    name_px = min(16 + 7 * max((len(str(r)) for r in shown["run"]), default=3), 320) if "run" in shown else None
    st.dataframe(
        shown, hide_index=True, key=key, width="stretch",
        column_order=[c for c in columns if c not in hidden],
        column_config={
            "updated": st.column_config.DatetimeColumn("updated (UTC)", format="YYYY-MM-DD HH:mm"),
            "run": st.column_config.TextColumn("run", pinned=True, width=name_px),
            "best_mAP": st.column_config.NumberColumn("best mAP (%)", format="%.2f"),
            "best_R1": st.column_config.NumberColumn("best R1 (%)", format="%.2f"),
            "best_epoch": st.column_config.NumberColumn("best epoch", format="%d"),
            "p_global": st.column_config.NumberColumn("p global", format="%.3f"),
            "p_erase": st.column_config.NumberColumn("p erase", format="%.3f"),
            "p_moved": st.column_config.NumberColumn("p moved", format="%.3f",
                                                     help="largest distance of the last p from p_init"),
            "error": st.column_config.TextColumn("error", width="medium"),
        },
    )


def resume_controls(sel: state.Selection) -> None:
    """Pick a stopped or failed run and resume it (its own process).

    A run whose checkpoint was saved by other esnet code names the changed files and resumes only
    once the user ticks the consent for *that* run and *those* changes (``--allow-code-change``);
    an unreadable checkpoint or code record is a warning and no button, since the trainer would refuse it.
    """
    resumable = sel.runs.loc[sel.runs["state"].isin(["stopped", "failed"]), "run"].tolist()
    if not resumable:
        return
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    again = c1.selectbox("Stopped or failed run", resumable, key="runs.resume_run")
    try:
        changed = cache.resume_code_changes(sel.run_path(again))
    except api.CheckpointError as e:
        st.warning(f"`{again}` cannot be resumed: {e}")
        return
    allow = False
    if changed:
        shown = ", ".join(f"`{f}`" for f in changed[:6])
        shown += f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        st.warning(f"`{again}` was trained with other code: {shown} changed since its last checkpoint. "
                   "Resuming under this code continues it, but its later epochs will not equal an "
                   "uninterrupted run's.")
        # keyed by run and changes: consent given for one run (or one set of changes) is not carried to another
        consent = hashlib.sha256("\n".join([again, *changed]).encode()).hexdigest()[:12]
        allow = st.checkbox("Continue under the current code (recorded in the run's meta.json)",
                            key=f"runs.allow_code_change.{consent}")
    if c2.button("Resume training", key="runs.resume", icon=":material/play_circle:",
                 disabled=bool(changed) and not allow):
        try:
            job = api.resume_training(sel.run_path(again), allow_code_change=allow)
        except ValueError as e:  # RunDirError is one
            st.warning(f"{again} cannot be resumed: {e}")
        else:
            st.session_state["runs.flash"] = f"Resumed `{again}` (pid {job.pid}). Log: `{job.log}`"
            state.focus(again)
            st.rerun()


def training_form(dataset_root: Path | None) -> dict[str, Any] | None:
    """The start-training form; the keyword arguments of ``api.start_training`` once submitted, else None."""
    choices = api.training_choices()
    with st.form("runs.start", border=False):
        name = st.text_input("Run name", key="runs.name", placeholder="e.g. esnet-p-20ep",
                             help="Letters, digits, '-', '_' or '.'; a new folder in the runs directory.")
        c1, c2, c3, c4 = st.columns(4)
        dataset = c1.selectbox("Dataset", choices["dataset"], index=choices["dataset"].index("demo"),
                               key="runs.dataset")
        backbone = c2.selectbox("Backbone", choices["backbone"], index=choices["backbone"].index("mobilenet_v2"),
                                key="runs.backbone")
        pool = c3.selectbox("Pooling", choices["pool"], key="runs.pool", help="p = P-pooling (trainable GeM)")
        erasing = c4.selectbox("Erasing", choices["erasing"], index=choices["erasing"].index("salient"),
                               key="runs.erasing", help="salient = ES-Net, off = baseline")
        c1, c2, c3, c4 = st.columns(4)
        epochs = c1.number_input("Epochs", min_value=1, max_value=500, value=8, step=1, key="runs.epochs")
        eval_every = c2.number_input("Evaluate every", min_value=0, max_value=100, value=2, step=1,
                                     key="runs.eval_every")
        batch = c3.number_input("Batch", min_value=4, max_value=512, value=32, step=4, key="runs.batch")
        size = c4.text_input("Input size HxW", value="128x64", key="runs.size")
        warm, decay = api.scaled_schedule(8)
        c1, c2, _ = st.columns([1, 1, 2])
        warmup = c1.text_input("Warm-up epochs", key="runs.warmup", placeholder="scaled",
                               help=f"Empty: BoT's 10 of 120 epochs scaled to this run (8 epochs: {warm}).")
        decays = c2.text_input("Decay ×0.1 at epochs", key="runs.decays", placeholder="scaled",
                               help="Comma-separated epochs. Empty: BoT's 40 and 70 of 120 epochs scaled to this run "
                                    f"(8 epochs: {', '.join(map(str, decay))}).")
        c1, c2 = st.columns([1, 3])
        device = c1.selectbox("Device", choices["device"], key="runs.device")
        weights = c2.text_input("Backbone weights (optional)", key="runs.weights",
                                help="An ImageNet state dict, e.g. from 'esnet weights fetch mobilenet_v2'.")
        st.caption(f"Dataset root: `{dataset_root}` (change it in the sidebar)." if dataset_root
                   else "Set a valid dataset root in the sidebar first.")
        if not st.form_submit_button("Start training", type="primary", disabled=dataset_root is None):
            return None
    return {"name": name.strip(), "dataset": dataset, "root": dataset_root, "backbone": backbone, "pool": pool,
            "erasing": erasing, "epochs": int(epochs), "size": size.strip(), "batch": int(batch),
            "weights": weights.strip(), "device": device, "eval_every": int(eval_every),
            "warmup_epochs": warmup.strip(), "milestones": decays.strip()}


def parse_schedule(args: dict[str, Any]) -> dict[str, Any]:
    """The form's warm-up / decay texts as ``api.start_training`` takes them ("" -> None: scaled).

    Raises:
        ValueError: a warm-up that is not a whole number >= 0, or decays that are not comma-separated epochs.
    """
    warm, decays = args["warmup_epochs"], args["milestones"]
    if warm and not warm.isdigit():
        raise ValueError(f"warm-up epochs must be a whole number >= 0 (empty: scaled), got {warm!r}")
    parts = [d.strip() for d in decays.split(",")] if decays else []
    if not all(d.isdigit() and int(d) > 0 for d in parts):
        raise ValueError(f"decay epochs must be comma-separated epochs >= 1, e.g. 5,7 (empty: scaled), got {decays!r}")
    return {**args, "warmup_epochs": int(warm) if warm else None,
            "milestones": tuple(int(d) for d in parts) if decays else None}


def monitor(metrics: pd.DataFrame, status: Any, *, refresh_s: float | None) -> None:
    """Status line, headline numbers and the six training charts of one run.

    Args:
        metrics: ``api.metrics_frame`` of the run.
        status: ``api.run_status`` of the run (state, epoch, total_epochs, error, updated).
        refresh_s: the live refresh period, or None when the page is not polling.
    """
    icon = STATE_ICONS.get(status.state, "")
    live = f" · refreshing every {refresh_s:g} s" if refresh_s else ""
    st.caption(f"{icon} **{status.state}** · updated {status.updated or '–'}{live}")
    if status.state == "stopped":
        st.info(f"Stopped by you ({status.error or 'no detail'}). Resume it on the Runs page.",
                icon=":material/stop_circle:")
    elif status.state == "starting":
        st.info("The trainer is starting (loading the dataset); the curves appear after the first epoch.")
    elif status.error:
        st.error(f"The run {status.state}: {status.error}")
    if metrics.empty:
        st.info("No epoch has finished yet: the curves appear after the first epoch.")
        return
    last = metrics.iloc[-1]
    evals = metrics.dropna(subset=["eval.mAP"]) if "eval.mAP" in metrics.columns else metrics.iloc[0:0]
    best = evals.loc[evals["eval.mAP"].idxmax()] if not evals.empty else None
    cols = st.columns(5)
    cols[0].metric("Epoch", f"{int(last['epoch'])}/{status.total_epochs or '?'}")
    cols[1].metric("Total loss", f"{last['loss.total']:.3f}" if "loss.total" in last else "–")
    cols[2].metric("Best mAP", _pct(None if best is None else 100 * best["eval.mAP"]),
                   help=None if best is None else f"epoch {int(best['epoch'])}")
    cols[3].metric("Best R1", _pct(None if best is None else 100 * best["eval.R1"]))
    p = last.get("p.global", math.nan)
    cols[4].metric("p (global)", "–" if math.isnan(p) else f"{p:.3f}")
    figures = [viz.loss_figure(metrics), viz.accuracy_figure(metrics), viz.eval_figure(metrics),
               viz.lr_figure(metrics), viz.p_figure(metrics), viz.epoch_time_figure(metrics)]
    for start in (0, 3):
        for j, (col, fig) in enumerate(zip(st.columns(3), figures[start:start + 3])):
            col.plotly_chart(fig, width="stretch", key=f"monitor.fig{start + j}")


def probe_caption(frame: api.ErasingFrame, index: int) -> str:
    """One line naming the probe and the erased block in feature cells."""
    top, _, h, _ = frame.box_cells
    return f"#{index} · id {frame.pid} · {viz.cam_text(frame.camera)} · erased rows {top}–{top + h - 1}"


def block_meaning(model: dict[str, Any], epoch: int) -> str | None:
    """What the outlined block is at ``epoch`` for a run's ``model`` config section (as
    ``api.read_run_config`` returns it, every key present), or None when it is exactly what the
    erasing branch dropped (salient erasing, already started)."""
    erasing = model["erasing"]
    would = "the block shown is where salient erasing would drop it (the CAM's peak)"
    if erasing == "off":
        return f"This run has no erasing branch (baseline): {would}."
    if erasing == "random":
        return f"This run erased a random block of the same size: {would}."
    start = model["erase_from_epoch"]
    if epoch < start:
        return (f"Erasing starts at epoch {start} (model.erase_from_epoch): at epoch {epoch} the erasing branch "
                f"still saw the whole map, so {would}.")
    return None


def probe_detail(frame: api.ErasingFrame, index: int, epoch: int) -> None:
    """Image, CAM overlay and erased view of one probe side by side."""
    shape = frame.heat.shape
    c1, c2, c3, _ = st.columns([1, 1, 1, 2])
    if frame.image is not None:
        c1.image(viz.cam_overlay(frame.image, frame.heat, alpha=0.0), caption="probe image")
    else:
        c1.image(viz.erased_view(None, (0, 0, 0, 0), shape=shape), caption="image unavailable")
    c2.image(viz.cam_overlay(frame.image, frame.heat, frame.box), caption=f"CAM at epoch {epoch}")
    c3.image(viz.erased_view(frame.image, frame.box, shape=shape), caption="erased block")
    top, left, h, w = frame.box_cells
    st.caption(f"Epoch {epoch}, {probe_caption(frame, index)} (feature cells: top {top}, left {left}, "
               f"{h}×{w}; pixels {frame.box}) · `{frame.relpath}`")


def probe_grid(frames: list[api.ErasingFrame], epoch: int, *, per_row: int = 8) -> None:
    """Every probe's CAM overlay with its erased block at one epoch."""
    for start in range(0, len(frames), per_row):
        cols = st.columns(per_row)
        for col, i in zip(cols, range(start, min(start + per_row, len(frames)))):
            f = frames[i]
            col.image(viz.cam_overlay(f.image, f.heat, f.box, height=160), caption=probe_caption(f, i))
