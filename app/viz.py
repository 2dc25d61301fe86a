"""Figures and pictures for the run-centred pages (runs, monitor, erasing, pooling).

A flat module of pure functions: DataFrames / arrays from ``esnet.api`` in, plotly figures or
(H, W, 3) uint8 RGB arrays out. Nothing here draws on the page or reads files.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from matplotlib import colormaps
from PIL import Image

BOX_COLOUR = (255, 255, 255)  # outline of the erased block
ERASED_GREY = (128, 128, 128)  # fill of the erased block in the "what the erasing branch lost" view
_RUN_COLOURS = px.colors.qualitative.D3 + px.colors.qualitative.Dark24[10:]
"""One colour per run on multi-run line charts (D3's ten, then more of Dark24's)."""
_BRANCH_STYLE = {"global": ("solid", "circle"), "erase": ("dash", "square")}
"""Line dash and marker per ES-Net branch on multi-run line charts."""
DISPLAY_HEIGHT = 256
"""Height (px) probe pictures are scaled to; re-ID crops are small (128x64 in the demo)."""

_LAYOUT = dict(height=320, margin=dict(l=10, r=10, t=40, b=10),
               legend=dict(orientation="h", yanchor="top", y=-0.3, title_text=""))


def cam_text(camera: int) -> str:
    """``cam 6`` for a camera number as in the file name (``Sample.camera``); ``cam –`` when unknown (-1)."""
    return f"cam {int(camera)}" if int(camera) >= 0 else "cam –"


def _empty(title: str, message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, **_LAYOUT)
    return fig


def _columns(metrics: pd.DataFrame, prefix: str) -> list[str]:
    return [c for c in metrics.columns if c.startswith(prefix)]


def _epoch_ticks(fig: go.Figure, epochs: pd.Series) -> go.Figure:
    """Whole-number epoch ticks (one per epoch up to 20 epochs)."""
    last = int(epochs.max()) if len(epochs) else 1
    fig.update_xaxes(tick0=1, dtick=1 if last <= 20 else None, tickformat="d")
    return fig


def epoch_lines(metrics: pd.DataFrame, columns: list[str], title: str, ytitle: str, *,
                scale: float = 1.0, strip: str = "", empty: str = "no records yet") -> go.Figure:
    """One line per column of ``metrics`` against ``epoch``; NaN rows (e.g. unevaluated epochs) are skipped.

    Args:
        metrics: ``api.metrics_frame`` output (column ``epoch`` plus the named columns).
        columns: the columns to draw; missing ones are ignored.
        scale: multiplies every value (100 for fractions shown as %).
        strip: prefix removed from the legend names ("loss." -> "global_ce").
        empty: the note drawn when there is nothing to plot.
    """
    present = [c for c in columns if c in metrics.columns]
    if metrics.empty or not present:
        return _empty(title, empty)
    fig = go.Figure()
    for col in present:
        rows = metrics[["epoch", col]].dropna()
        fig.add_trace(go.Scatter(x=rows["epoch"], y=rows[col] * scale, name=col.removeprefix(strip),
                                 mode="lines+markers"))
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title=ytitle, **_LAYOUT)
    return _epoch_ticks(fig, metrics["epoch"])


def loss_figure(metrics: pd.DataFrame) -> go.Figure:
    """Epoch-mean losses per branch and term (``loss.*``)."""
    return epoch_lines(metrics, _columns(metrics, "loss."), "Loss per branch", "loss", strip="loss.")


def accuracy_figure(metrics: pd.DataFrame) -> go.Figure:
    """Training top-1 accuracy per branch (``acc.*``), in %."""
    return epoch_lines(metrics, _columns(metrics, "acc."), "Training accuracy", "top-1 (%)", scale=100.0,
                       strip="acc.")


def eval_figure(metrics: pd.DataFrame) -> go.Figure:
    """mAP and CMC rank-1/5 on evaluated epochs, in %."""
    return epoch_lines(metrics, ["eval.mAP", "eval.R1", "eval.R5"], "Evaluation", "%", scale=100.0, strip="eval.",
                       empty="no evaluated epoch yet")


def lr_figure(metrics: pd.DataFrame) -> go.Figure:
    """Learning rate per epoch (log axis)."""
    fig = epoch_lines(metrics, ["lr"], "Learning rate", "lr")
    if "lr" in metrics.columns and not metrics.empty:
        # Labels at powers of ten only: plotly's default log ticks label 2 and 5 without their decade.
        fig.update_yaxes(type="log", dtick=1, exponentformat="power")
    return fig


def p_figure(metrics: pd.DataFrame) -> go.Figure:
    """Learned P-pooling exponent per branch (``p.*``); a note for avg/max pooling runs."""
    cols = _columns(metrics, "p.")
    if not cols and not metrics.empty:
        return _empty("Learned p", "avg / max pooling: nothing learned")
    return epoch_lines(metrics, cols, "Learned p", "p", strip="p.")


def epoch_time_figure(metrics: pd.DataFrame) -> go.Figure:
    """Seconds per training epoch (bars)."""
    if metrics.empty or "time_s" not in metrics.columns:
        return _empty("Epoch time", "no records yet")
    fig = go.Figure(go.Bar(x=metrics["epoch"], y=metrics["time_s"], name="time_s"))
    fig.update_layout(title="Epoch time", xaxis_title="epoch", yaxis_title="seconds", **_LAYOUT)
    return _epoch_ticks(fig, metrics["epoch"])


def p_trajectories(metrics_by_run: dict[str, pd.DataFrame], *, empty: str = "no P-pooling run selected",
                   title: str = "Learned p") -> go.Figure:
    """Learned p of several runs over epochs: one line per run and branch (runs without p are left out).

    Each run has one colour and each branch one dash and marker (global solid with circles,
    erase dashed with squares), so a dozen lines stay readable. Average pooling (p = 1) is a
    dotted reference line and max pooling (p -> inf) a note at the top, so the curves read
    against both. A per-channel run's line is its channel mean.
    """
    fig = go.Figure()
    runs = [run for run, frame in metrics_by_run.items() if _columns(frame, "p.")]
    colour = {run: _RUN_COLOURS[i % len(_RUN_COLOURS)] for i, run in enumerate(runs)}
    for run in runs:
        frame = metrics_by_run[run]
        for col in _columns(frame, "p."):
            rows = frame[["epoch", col]].dropna()
            if rows.empty:  # a branch whose every value is NaN: nothing to draw (and no maximum below)
                continue
            branch = col.removeprefix("p.")
            dash, symbol = _BRANCH_STYLE.get(branch, ("dot", "diamond"))
            fig.add_trace(go.Scatter(x=rows["epoch"], y=rows[col], mode="lines+markers", name=f"{run} · {branch}",
                                     legendgroup=run, line=dict(color=colour[run], dash=dash),
                                     marker=dict(color=colour[run], symbol=symbol)))
    if not fig.data:
        return _empty(title, empty)
    fig.add_hline(y=1.0, line_dash="dot", line_color="grey", annotation_text="average pooling (p = 1)",
                  annotation_position="bottom right")
    fig.add_annotation(text="↑ max pooling as p → ∞", showarrow=False, x=0.0, y=1.0, xref="paper", yref="paper",
                       xanchor="left", yanchor="top", font=dict(color="grey"))
    top = max(float(np.nanmax(t.y)) for t in fig.data)
    fig.update_yaxes(range=[0.9, max(top * 1.1, 1.5)])
    layout = dict(_LAYOUT, height=_LAYOUT["height"] + 20 * len(runs))  # room for the curves above the legend
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title="p", **layout)
    return fig


def has_p_spread(metrics: pd.DataFrame) -> bool:
    """Whether a run learned one p per channel (metrics.jsonl has ``p_spread``)."""
    return bool(_columns(metrics, "p_spread."))


def p_distribution_figure(p_by_run: dict[str, pd.DataFrame]) -> go.Figure:
    """Histogram of the final per-channel p (``api.final_p_channels``: branch, channel, p) per run and branch."""
    fig = go.Figure()
    for run, frame in p_by_run.items():
        for branch, rows in frame.groupby("branch", sort=False):
            fig.add_trace(go.Histogram(x=rows["p"], name=f"{run} · {branch}", opacity=0.6, nbinsx=40))
    if not fig.data:
        return _empty("Final p per channel", "no checkpoint of a per-channel P-pooling run")
    fig.add_vline(x=1.0, line_dash="dot", line_color="grey", annotation_text="average (p = 1)")
    fig.update_layout(title="Final p per channel", xaxis_title="p", yaxis_title="channels", barmode="overlay",
                      **_LAYOUT)
    return fig


def cmc_figure(curves: dict[str, np.ndarray] | pd.DataFrame, *, max_rank: int = 20,
               title: str | None = None) -> go.Figure:
    """CMC curves as matching rate (%) vs rank, ranks 1..max_rank (the one CMC plot: the Pooling
    page's runs and the Evaluate page's checkpoints).

    Args:
        curves: name -> (R,) fractions, rank 1 first; or an ``api.cmc_frame`` (run, rank,
            cmc fraction: each run's best evaluated epoch).
        max_rank: ranks shown.
        title: None = "CMC (best epoch)" for an ``api.cmc_frame``, no title for a dict.
    """
    if isinstance(curves, pd.DataFrame):
        title = "CMC (best epoch)" if title is None else title
        curves = {str(run): rows.sort_values("rank")["cmc"].to_numpy()
                  for run, rows in curves.groupby("run", sort=False)}
    if not curves:
        return _empty(title or "CMC", "no evaluated epoch")
    fig = go.Figure()
    lowest = 100.0
    for name, cmc in curves.items():
        cmc = 100.0 * np.asarray(cmc, dtype=np.float64)[:max_rank]  # (R,)
        lowest = min(lowest, float(cmc.min()) if len(cmc) else lowest)
        fig.add_trace(go.Scatter(x=np.arange(1, len(cmc) + 1), y=cmc, mode="lines+markers", name=name))
    fig.update_layout(title=title or None, xaxis_title="rank", yaxis_title="matching rate (%)", **_LAYOUT)
    fig.update_yaxes(range=[max(0.0, lowest - 5.0), 100.5])  # the rank-1 end, not 0-100, decides the view
    return fig


def _centre_counts(positions: pd.DataFrame) -> pd.DataFrame:
    """Probes per (block centre, epoch): rows = the distinct centres (ascending), columns = epochs."""
    centres = positions.assign(center=positions["center"].round(4))
    return centres.groupby(["center", "epoch"]).size().unstack("epoch", fill_value=0).sort_index()


def block_position_heatmap(positions: pd.DataFrame) -> go.Figure:
    """How many probes have their erased block centred at each height, per epoch.

    Centres sit on the feature grid (half-cell steps), so the rows are the distinct centres seen
    rather than fixed bins, which would leave empty stripes.

    Args:
        positions: ``api.block_positions`` (epoch, probe, top, height, center in [0, 1]).
    """
    if positions.empty:
        return _empty("Erased block position", "no probe records")
    counts = _centre_counts(positions)  # (centres, epochs)
    fig = go.Figure(go.Heatmap(z=counts.to_numpy(), x=list(counts.columns), y=list(counts.index),
                               colorscale="Blues", colorbar=dict(title="probes"), xgap=1, ygap=1))
    fig.update_yaxes(autorange="reversed", title="block centre (0 = head, 1 = feet)")
    fig.update_layout(title="Erased block position per epoch", xaxis_title="epoch", **{**_LAYOUT, "height": 360})
    return fig


def block_position_histogram(positions: pd.DataFrame, epoch: int) -> go.Figure:
    """Probes per block centre (0 = top of the image) at one epoch."""
    rows = positions.loc[positions["epoch"] == epoch] if not positions.empty else positions
    if rows.empty:
        return _empty(f"Block centres at epoch {epoch}", "no probe record for this epoch")
    counts = _centre_counts(rows)[epoch]
    fig = go.Figure(go.Bar(x=list(counts.index), y=counts.to_numpy()))
    fig.update_xaxes(range=[0, 1], title="block centre (0 = head, 1 = feet)")
    fig.update_layout(title=f"Block centres at epoch {epoch}", yaxis_title="probes", **{**_LAYOUT, "height": 360})
    return fig


def _resize(image: np.ndarray, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    width = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC), dtype=np.uint8)


def _scale_box(box: tuple[int, int, int, int], factor: float) -> tuple[int, int, int, int]:
    return tuple(int(round(v * factor)) for v in box)  # type: ignore[return-value]


def draw_box(image: np.ndarray, box: tuple[int, int, int, int], *, colour: tuple[int, int, int] = BOX_COLOUR,
             thickness: int = 2) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 with the outline of ``box`` = (top, left, height, width) in pixels."""
    out = image.copy()
    H, W = out.shape[:2]
    top, left, h, w = box
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(H, top + h), min(W, left + w)
    if y1 <= y0 or x1 <= x0:
        return out
    t = max(1, thickness)
    out[y0:min(y0 + t, y1), x0:x1] = colour
    out[max(y1 - t, y0):y1, x0:x1] = colour
    out[y0:y1, x0:min(x0 + t, x1)] = colour
    out[y0:y1, max(x1 - t, x0):x1] = colour
    return out


def _base(image: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    if image is None:
        return np.full((*shape, 3), 96, dtype=np.uint8)  # (H, W, 3) neutral grey when the image is unavailable
    return image


def cam_overlay(image: np.ndarray | None, heat: np.ndarray, box: tuple[int, int, int, int] | None = None, *,
                alpha: float = 0.5, height: int = DISPLAY_HEIGHT) -> np.ndarray:
    """The CAM as a jet heat map over the image, with the erased block outlined.

    Args:
        image: (H, W, 3) uint8, or None (a grey background is used).
        heat: (H, W) float in [0, 1] at image resolution.
        box: (top, left, height, width) in image pixels, or None.
        alpha: weight of the heat map.
        height: output height in pixels (aspect kept).
    Returns:
        (height, W * height / H, 3) uint8 RGB.
    """
    if heat.ndim != 2:
        raise ValueError(f"heat must be (H, W), got {heat.shape}")
    base = _base(image, heat.shape)
    if base.shape[:2] != heat.shape:
        raise ValueError(f"image {base.shape[:2]} and heat {heat.shape} differ in size")
    colours = colormaps["jet"](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0  # (H, W, 3)
    blend = ((1.0 - alpha) * base.astype(np.float32) + alpha * colours).round().clip(0, 255).astype(np.uint8)
    out = _resize(blend, height)
    if box is not None:
        out = draw_box(out, _scale_box(box, height / heat.shape[0]), thickness=max(1, height // 96))
    return out


def erased_view(image: np.ndarray | None, box: tuple[int, int, int, int], *, shape: tuple[int, int] | None = None,
                height: int = DISPLAY_HEIGHT) -> np.ndarray:
    """What the erasing branch loses: the image with the erased block filled grey and outlined.

    Args:
        image: (H, W, 3) uint8, or None (then ``shape`` gives (H, W) and the base is grey).
        box: (top, left, height, width) in image pixels.
    Returns:
        (height, W * height / H, 3) uint8 RGB.
    """
    if image is None and shape is None:
        raise ValueError("erased_view needs the image or its shape")
    base = _base(image, shape if image is None else image.shape[:2]).copy()
    top, left, h, w = box
    base[max(0, top):top + h, max(0, left):left + w] = ERASED_GREY
    out = _resize(base, height)
    return draw_box(out, _scale_box(box, height / base.shape[0]), thickness=max(1, height // 96))


def pooling_map_figure(fmap: np.ndarray) -> go.Figure:
    """The demo activation map (h, w) as a heat map."""
    fig = go.Figure(go.Heatmap(z=fmap, colorscale="Viridis", colorbar=dict(title="act.")))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", visible=False)
    fig.update_xaxes(visible=False)
    fig.update_layout(title="Feature map (one channel)", **{**_LAYOUT, "height": 360})
    return fig


def pooling_curve_figure(curve: pd.DataFrame, *, avg: float, max_: float, p: float, gem: float) -> go.Figure:
    """GeM value against p (log axis) between the average and max lines, with the chosen p marked.

    Args:
        curve: ``PoolingDemo.curve`` (columns p, gem).
    """
    fig = go.Figure(go.Scatter(x=curve["p"], y=curve["gem"], mode="lines", name="GeM(p)"))
    fig.add_hline(y=avg, line_dash="dot", annotation_text="average (p = 1)", annotation_position="bottom right")
    fig.add_hline(y=max_, line_dash="dash", annotation_text="max (p → ∞)", annotation_position="top left")
    fig.add_trace(go.Scatter(x=[p], y=[gem], mode="markers", marker=dict(size=12), name=f"p = {p:g}"))
    fig.update_xaxes(type="log", title="p", tickvals=[1, 2, 4, 8, 16, 32, 64])  # not plotly's bare "2 3 4" after 10
    fig.update_layout(title="P-pooling between average and max", yaxis_title="pooled value",
                      **{**_LAYOUT, "height": 360})
    return fig
