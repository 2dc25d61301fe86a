"""Training monitor: one run's losses, accuracy, mAP/R1, lr, learned p and epoch time, live while it trains."""
import streamlit as st

from app import cache, panels, state
from esnet import api

REFRESH_S = 2.0

sel = state.current()
st.title(f"Training monitor · {sel.run}" if sel.run else "Training monitor")
path = state.require_run(sel)
shown = api.run_status(path).state
live = shown in ("starting", "running")  # a run started from the Runs page opens here while it is starting


@st.fragment(run_every=REFRESH_S if live else None)
def board() -> None:
    status = api.run_status(path)
    if live and status.state != shown:
        st.rerun()  # the run started training or ended: redraw the whole page (sidebar, timer) once
    panels.monitor(cache.metrics_frame(path), status, refresh_s=REFRESH_S if live else None)


board()
