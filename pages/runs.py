"""Runs (the landing page): every run in the runs directory, start or stop training, the demo dataset."""
import streamlit as st

from app import cache, panels, state
from esnet import api

st.title("esnet: Erasing Salient Parts to Learn More")
st.markdown(
    "ES-Net trains a **global branch** whose class activation map marks the most salient "
    "region of each person, and an **erasing branch** that must identify them with that "
    "region dropped. **P-pooling** (generalized mean with a trainable exponent *p*) sits "
    "between average (*p* = 1) and max pooling."
)
sel = state.current()
demo_root = cache.demo_root()  # generated on first start, before a run can be started on it
if (flash := st.session_state.pop("runs.flash", None)) is not None:
    st.success(flash)

st.subheader("Runs")
if not state.show_no_runs(sel):
    st.caption(f"`{sel.runs_dir}` · pick a run in the sidebar to inspect it on the other pages.")
    panels.runs_table(sel.runs)
    running = sel.runs.loc[sel.runs["state"] == "running", "run"].tolist()
    if running:
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        victim = c1.selectbox("Running run", running, key="runs.stop_run")
        if c2.button("Stop training", key="runs.stop", icon=":material/stop_circle:"):
            try:
                outcome = api.stop_training(sel.run_path(victim), timeout_s=5.0)
            except api.RunDirError as e:
                st.warning(f"{victim} cannot be stopped: {e}")
            else:  # rerun, so the sidebar (drawn before the click) shows the run's new state too
                st.session_state["runs.flash"] = f"{victim}: {outcome} (resume it below)."
                st.rerun()
    panels.resume_controls(sel)

if sel.runs_dir is not None:
    with st.expander("Start a training run", expanded=sel.runs.empty, icon=":material/play_arrow:"):
        if sel.dataset_problem:
            st.warning(sel.dataset_problem)
        args = panels.training_form(sel.dataset_root)
        if args is not None:
            if not args["root"].is_dir():
                st.error(f"The dataset root `{args['root']}` does not exist; set it in the sidebar.")
            else:
                try:
                    if args["weights"] and args["weights"].lower() != "none":  # paths stay inside the allowed roots
                        args["weights"] = str(api.confine_path(args["weights"]))
                    user_runs = api.user_runs_dir()  # never the committed demo runs
                    user_runs.mkdir(parents=True, exist_ok=True)
                    job = api.start_training(user_runs, **panels.parse_schedule(args))
                except (ValueError, OSError) as e:  # a path outside the allowed roots, a bad or taken name,
                    st.error(f"Cannot start the run: {e}")  # bad epochs; the disk refusing the folder or log
                else:
                    st.session_state["runs.flash"] = (
                        f"Started `{args['name']}` (pid {job.pid}); follow it on the Training monitor. "
                        f"Log: `{job.log}`")
                    state.focus_dir(job.run_dir)
                    st.rerun()

st.subheader("Demo dataset")
st.caption(f"Synthetic persons in Market-1501 layout at `{demo_root}`")
try:
    overview = cache.dataset_overview("demo", demo_root)
except api.DatasetError as e:
    st.error(f"The demo dataset could not be read: {e}")
else:
    st.dataframe(overview, hide_index=True, key="runs.demo_overview")
