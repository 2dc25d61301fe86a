"""Pooling comparison: runs that differ in pooling (P-pooling vs average vs max) and a live GeM demo."""
import streamlit as st

from app import cache, panels, state, viz
from esnet import api

sel = state.current()
st.title("Pooling comparison")
st.markdown("P-pooling is the generalized mean $\\big(\\frac{1}{HW}\\sum x^p\\big)^{1/p}$: *p* = 1 is average "
            "pooling, *p* → ∞ max pooling; ES-Net learns *p* per branch.")

st.subheader("Runs")
if not state.show_no_runs(sel):
    names = list(sel.runs["run"])
    default = panels.pooling_trio(sel.runs)
    chosen = st.multiselect("Runs to compare", names, default=default, key="pooling.runs", persist_state="session")
    if not chosen:
        st.info("Choose one or more runs to compare.")
    else:
        table = sel.runs.set_index("run").loc[chosen].reset_index()
        panels.runs_table(table[["run", "pool", "erasing", "epochs", "best_mAP", "best_R1", "best_epoch",
                                 "p_global", "p_erase", "p_moved", "path"]], key="pooling.table")
        paths = {n: sel.run_path(n) for n in chosen}
        c1, c2 = st.columns(2)
        c1.plotly_chart(viz.cmc_figure(cache.cmc_frame(paths)), width="stretch", key="pooling.cmc")
        trajectories = viz.p_trajectories({n: cache.metrics_frame(p) for n, p in paths.items()})
        c2.plotly_chart(trajectories, width="stretch", key="pooling.p")

st.subheader("Learned p over training")
p_runs = panels.p_pooling_runs(sel.runs)
if sel.runs_dir is not None and not p_runs:
    st.info("No P-pooling run in this runs directory: average and max pooling have no p to learn.")
elif p_runs:
    frames = {n: cache.metrics_frame(sel.run_path(n)) for n in p_runs}
    st.plotly_chart(viz.p_trajectories(frames, title="Learned p of every P-pooling run, per branch"),
                    width="stretch", key="pooling.p_all")
    per_channel = [n for n, frame in frames.items() if viz.has_p_spread(frame)]
    if per_channel:
        try:
            finals = {n: cache.final_p_channels(sel.run_path(n)) for n in per_channel}
        except api.CheckpointError as e:
            st.warning(f"Cannot show the per-channel p: {e}")
        else:
            st.plotly_chart(viz.p_distribution_figure(finals), width="stretch", key="pooling.p_channels")

st.subheader("Live demo: one feature map, three poolings")
p = st.slider("p", min_value=1.0, max_value=64.0, value=3.0, step=0.5, key="pooling.p_demo")
demo = cache.pooling_demo(p)
c1, c2, c3 = st.columns(3)
c1.metric("Average pooling", f"{demo.avg:.4f}")
c2.metric(f"GeM (p = {p:g})", f"{demo.gem:.4f}")
c3.metric("Max pooling", f"{demo.max:.4f}")
c1, c2 = st.columns(2)
c1.plotly_chart(viz.pooling_map_figure(demo.fmap), width="stretch", key="pooling.fmap")
c2.plotly_chart(viz.pooling_curve_figure(demo.curve, avg=demo.avg, max_=demo.max, p=p, gem=demo.gem),
                width="stretch", key="pooling.curve")
