"""Figures of the Baseline vs ES-Net page: pure functions of data, nothing drawn here."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

COLOUR_A = "#64748b"  # slate: run A (the baseline by default)
COLOUR_B = "#ea580c"  # orange: run B (ES-Net by default)

SPREAD_LABELS = {"coverage": "coverage (fraction of the feature cells holding half the CAM mass)",
                 "entropy": "normalised CAM entropy (0 = one cell, 1 = flat)"}
"""Axis titles of the attention-spread measures of ``api.attention_spread_frame``."""


def delta_histogram(diff: pd.DataFrame, name_a: str, name_b: str, *, bins: int = 40) -> go.Figure:
    """Histogram of the per-query ΔAP (``api.compare_reports``' ``delta`` = AP of b − AP of a).

    Bins are symmetric around 0 over [-1, 1] (one bin edge at 0), so wins and losses never share
    a bin; a dashed line marks 0 and a solid one the mean.
    """
    if "delta" not in diff:
        raise ValueError(f"diff must have a 'delta' column (api.compare_reports), got {list(diff.columns)}")
    if bins < 2 or bins % 2:
        raise ValueError(f"bins must be an even number >= 2 (an edge at 0), got {bins!r}")
    delta = diff["delta"].to_numpy(float)  # (N,)
    fig = go.Figure(go.Histogram(x=delta, xbins=dict(start=-1.0, end=1.0, size=2.0 / bins), name="queries",
                                 marker_color=COLOUR_B, hovertemplate="ΔAP %{x}<br>%{y} queries<extra></extra>"))
    fig.add_vline(x=0.0, line=dict(color="black", dash="dash", width=1))
    if delta.size:
        fig.add_vline(x=float(delta.mean()), line=dict(color=COLOUR_B, width=2),
                      annotation_text=f"mean {delta.mean():+.3f}", annotation_position="top")
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), showlegend=False, bargap=0.05,
                      xaxis_title=f"ΔAP = AP({name_b}) − AP({name_a})", yaxis_title="queries")
    fig.update_xaxes(range=[-1.02, 1.02])
    return fig


def spread_histograms(frame_a: pd.DataFrame, frame_b: pd.DataFrame, measure: str, name_a: str,
                      name_b: str, *, bins: int = 40) -> go.Figure:
    """Overlaid histograms of one spread measure (``coverage`` or ``entropy``) of two models.

    ``frame_a``, ``frame_b``: ``api.attention_spread_frame`` results; NaN rows (no positive CAM) are left out.
    """
    if measure not in SPREAD_LABELS:
        raise ValueError(f"measure must be one of {sorted(SPREAD_LABELS)}, got {measure!r}")
    fig = go.Figure()
    for frame, name, colour in ((frame_a, name_a, COLOUR_A), (frame_b, name_b, COLOUR_B)):
        values = frame[measure].to_numpy(float)
        values = values[np.isfinite(values)]  # (n,)
        fig.add_trace(go.Histogram(x=values, name=f"{name} (median {np.median(values):.3f})" if values.size else name,
                                   xbins=dict(start=0.0, end=1.0, size=1.0 / bins), opacity=0.6,
                                   marker_color=colour))
    fig.update_layout(barmode="overlay", height=320, margin=dict(l=10, r=10, t=30, b=10),
                      xaxis_title=SPREAD_LABELS[measure], yaxis_title="query images",
                      legend=dict(orientation="h", y=1.12))
    fig.update_xaxes(range=[0.0, 1.0])
    return fig
