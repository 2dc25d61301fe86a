"""Erasing inspector: where the CAM peaks and which block the erasing branch drops, epoch by epoch."""
import streamlit as st

from app import cache, panels, state, viz
from esnet import api

sel = state.current()
st.title(f"Erasing inspector · {sel.run}" if sel.run else "Erasing inspector")
path = state.require_run(sel)
positions = cache.block_positions(path)
epochs = sorted(int(e) for e in positions["epoch"].unique())
if not epochs:
    st.info(f"`{sel.run}` has no probe records (probes/probes.json and probes/epoch_NNNN.npz): "
            "runs trained with `--probes 0` cannot be inspected here.")
    st.stop()

epoch = st.select_slider("Epoch (0 = before training)", options=epochs, value=epochs[-1], key="erasing.epoch")
try:
    frames = cache.erasing_frames(path, epoch, sel.dataset_root)
except api.RunDirError as e:
    st.warning(f"Epoch {epoch} cannot be shown: {e}")
    st.stop()
missing = sum(f.image is None for f in frames)
if missing:
    where = f"under the dataset root `{sel.dataset_root}`" if sel.dataset_root else "(no valid dataset root)"
    st.info(f"Probe images unavailable for {missing} of {len(frames)} probes: the run ships without "
            f"probes/images and they are not {where}. CAMs are drawn on grey; set the dataset root in the sidebar.")

try:
    meaning = panels.block_meaning(api.read_run_config(path)["model"], epoch)
except api.RunDirError:
    meaning = None  # the header already shows the run; an unreadable config leaves the plain view
if meaning:
    st.info(meaning)

one, grid, hist = st.tabs(["One probe", "All probes", "Block positions"])
with one:
    i = st.selectbox("Probe", range(len(frames)), key="erasing.probe",
                     format_func=lambda k: panels.probe_caption(frames[k], k).rsplit(" · erased", 1)[0])
    panels.probe_detail(frames[i], i, epoch)
with grid:
    st.caption(f"All {len(frames)} probes at epoch {epoch}: CAM with the erased block outlined.")
    panels.probe_grid(frames, epoch)
with hist:
    c1, c2 = st.columns(2)
    c1.plotly_chart(viz.block_position_heatmap(positions), width="stretch", key="erasing.heatmap")
    c2.plotly_chart(viz.block_position_histogram(positions, epoch), width="stretch", key="erasing.hist")
