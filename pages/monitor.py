"""Training monitor: one run's losses, accuracy, mAP/R1, lr, learned p and epoch time, live while it trains."""
import streamlit as st

from app import cache, panels, state
from esnet import api

REFRESH_S = 2.0

sel = state.current()
st.title(f"Training monitor · {sel.run}" if sel.run else "Training monitor")
path = state.require_run(sel)
live = api.run_status(path).state == "running"


@st.fragment(run_every=REFRESH_S if live else None)
def board() -> None:
    status = api.run_status(path)
    if live and status.state != "running":
        st.rerun()  # the run just ended: redraw the whole page once, with the timer off
    panels.monitor(cache.metrics_frame(path), status, refresh_s=REFRESH_S if live else None)


board()
