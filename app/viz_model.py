"""Pictures and figures for the model-centred pages (rank browser, embeddings, search, evaluate).

Pure functions of data: PIL images and plotly figures in, nothing drawn here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from matplotlib import colormaps
from PIL import Image, ImageOps

from app.viz import cmc_figure  # noqa: F401  (the one CMC plot; pages call viz_model.cmc_figure too)
from esnet import api

RIGHT = (22, 163, 74)  # green: same identity / accepted
WRONG = (220, 38, 38)  # red: another identity
NEUTRAL = (148, 163, 184)  # grey: ignored by the protocol / unknown
QUERY = (37, 99, 235)  # blue: the query itself

THUMB_HEIGHT = 160
"""Displayed height (px) of a person crop; re-ID crops are small (128x64 in the demo)."""


def bordered(image: Image.Image, colour: tuple[int, int, int], *, height: int = THUMB_HEIGHT,
             width: int = 5) -> Image.Image:
    """``image`` scaled to ``height`` (aspect kept, nearest-free bicubic) inside a ``width``-px ``colour`` frame."""
    w, h = image.size
    scaled = image.convert("RGB").resize((max(1, round(w * height / h)), height), Image.Resampling.BICUBIC)
    return ImageOps.expand(scaled, border=width, fill=colour)


def hit_colour(correct: object, ignored: bool = False) -> tuple[int, int, int]:
    """Frame colour of a ranked hit: grey when ignored or unknown, else green/red by ``correct``."""
    if ignored or correct is None or (isinstance(correct, float) and np.isnan(correct)):
        return NEUTRAL
    return RIGHT if bool(correct) else WRONG


def overlay(image: Image.Image, heat: np.ndarray, *, alpha: float = 0.45, cmap: str = "jet") -> Image.Image:
    """Blend a (H, W) float map in [0, 1] over ``image`` (resized to the image when sizes differ).

    Args:
        image: RGB PIL image of size (W, H).
        heat: (h, w) float in [0, 1]; resized bilinearly to (H, W) if needed.
        alpha: weight of the heat colours.
    Returns:
        RGB PIL image of the same size as ``image``.
    """
    if heat.ndim != 2:
        raise ValueError(f"heat must be (H, W), got shape {heat.shape}")
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    h = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    if h.shape != rgb.shape[:2]:
        h = np.asarray(Image.fromarray(h).resize(image.size, Image.Resampling.BILINEAR), dtype=np.float32)
    colours = colormaps[cmap](h)[..., :3].astype(np.float32)  # (H, W, 3)
    out = (1.0 - alpha) * rgb + alpha * colours
    return Image.fromarray(np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8))


def roc_figure(fpr: np.ndarray, tpr: np.ndarray, *, auc: float, best_fpr: float, best_tpr: float) -> go.Figure:
    """Verification ROC with the calibrated operating point (max Youden J) marked."""
    fig = go.Figure(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"ROC (AUC {auc:.3f})"))
    fig.add_trace(go.Scatter(x=[best_fpr], y=[best_tpr], mode="markers", marker=dict(size=11, symbol="x"),
                             name="operating point"))
    fig.update_layout(xaxis_title="false accept rate", yaxis_title="true accept rate", height=360,
                      margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=1.12))
    return fig


COLOUR_BY = {"identity": "pid", "camera": "camera", "split": "split"}
"""Embedding scatter colouring choices -> projection frame column (``camera``: as in the file names)."""

_PALETTE = px.colors.qualitative.Dark24 + px.colors.qualitative.Light24 + px.colors.qualitative.Alphabet


def embedding_figure(frame: pd.DataFrame, colour_by: str, *, selected: int | None = None) -> go.Figure:
    """Scatter of a projection frame (x, y, pid, camid, camera, split, path) coloured by ``colour_by``.

    Each point's ``customdata`` is [row, pid, camera, split, file name] so a selection
    event maps back to the frame row. ``selected`` (a row) is ringed.
    """
    if colour_by not in COLOUR_BY:
        raise ValueError(f"colour_by must be one of {sorted(COLOUR_BY)}, got {colour_by!r}")
    col = COLOUR_BY[colour_by]
    df = frame.assign(row=np.arange(len(frame)), name=frame["path"].map(lambda p: api.printable(str(p).rsplit("/", 1)[-1])),
                      group=frame[col].astype(str))
    order = sorted(df["group"].unique(), key=lambda s: (len(s), s))
    custom = ["row", "pid", "camera", "split", "name"]
    if colour_by == "identity":
        # One trace per split with a colour per point: a trace per identity (px's way) costs
        # seconds to build and to draw for a few hundred identities, and their legend is useless.
        colour = dict(zip(order, (_PALETTE[i % len(_PALETTE)] for i in range(len(order)))))
        fig = go.Figure([go.Scatter(x=part["x"], y=part["y"], mode="markers", name=split,
                                    customdata=part[custom].to_numpy(dtype=object),
                                    marker=dict(color=part["group"].map(colour).tolist(),
                                                symbol="circle" if i == 0 else "diamond"))
                         for i, split in enumerate(df["split"].unique())  # symbols in px's order
                         for part in [df[df["split"] == split]]])
        fig.update_layout(template="plotly")
    else:
        fig = px.scatter(df, x="x", y="y", color="group", symbol="split", category_orders={"group": order},
                         custom_data=custom, color_discrete_sequence=_PALETTE, render_mode="svg")
    fig.update_traces(marker=dict(size=7, opacity=0.85, line=dict(width=0)),
                      hovertemplate="<b>%{customdata[4]}</b><br>id %{customdata[1]} · cam %{customdata[2]}"
                                    " · %{customdata[3]}<br>row %{customdata[0]}<extra></extra>")
    if selected is not None and 0 <= selected < len(df):
        r = df.iloc[selected]
        fig.add_trace(go.Scatter(x=[r["x"]], y=[r["y"]], mode="markers", name="selected", hoverinfo="skip",
                                 marker=dict(size=18, color="rgba(0,0,0,0)", line=dict(width=3, color="black"))))
    fig.update_layout(height=560, margin=dict(l=10, r=10, t=10, b=10), legend_title_text=colour_by,
                      showlegend=colour_by != "identity")
    fig.update_xaxes(showticklabels=False, title=None)
    fig.update_yaxes(showticklabels=False, title=None)
    return fig
