"""The sidebar every page shares: runs directory, focused run, dataset root.

The router (app/main.py) calls :func:`sidebar` before running the page, so its widgets
belong to the entry point and keep their values across page switches; pages read the result
with :func:`current`. Typed paths are confined by ``api.confine_path`` to the repository,
``$HOME``, ``$ESNET_ALLOWED_ROOTS`` and the configured defaults (``$ESNET_RUNS_DIR``,
``$ESNET_DEMO_ROOT``, ``$ESNET_DATASET_ROOT``); a bad path is reported on the page, never raised.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from esnet import api

KEY_RUNS_DIR = "esnet.runs_dir"
KEY_RUN = "esnet.run"
KEY_DATASET_ROOT = "esnet.dataset_root"
_KEY_SELECTION = "esnet._selection"
_KEY_FOCUS = "esnet._focus"
_KEY_CHOICE = "esnet._run_choice"
_KEY_LABEL = "esnet._run_label"  # the sidebar label shown last, "<run> (<state>)"


@dataclass(frozen=True)
class Selection:
    """What the sidebar currently points at.

    Attributes:
        runs_dir: the confined, existing runs directory, or None (see ``problem``).
        runs: ``api.runs_frame(runs_dir)``; empty when ``runs_dir`` is None.
        run: the focused run's name (a value of ``runs["run"]``), or None when there are no runs.
        dataset_root: the confined dataset root (may not exist), or None when the typed path is refused.
        problem: why ``runs_dir`` is None or empty, as a sentence for the page.
        dataset_problem: why ``dataset_root`` is None.
    """

    runs_dir: Path | None
    runs: pd.DataFrame
    run: str | None
    dataset_root: Path | None
    problem: str | None = None
    dataset_problem: str | None = None

    def run_path(self, name: str | None = None) -> Path:
        """The directory of run ``name`` (default: the focused run).

        Raises:
            KeyError: no such run in ``runs``.
        """
        name = self.run if name is None else name
        rows = self.runs.loc[self.runs["run"] == name, "path"]
        if rows.empty:
            raise KeyError(f"no run {name!r} in {self.runs_dir}; runs: {list(self.runs['run'])}")
        return Path(rows.iloc[0])


def _roots() -> list[Path]:
    return api.default_allowed_roots() + [api.default_runs_dir(), api.default_demo_root(), api.default_dataset_root()]


def _runs(runs_dir_text: str) -> tuple[Path | None, pd.DataFrame, str | None]:
    empty = pd.DataFrame(columns=["run", "state", "path"])
    try:
        runs_dir = api.confine_path(runs_dir_text, _roots())
    except ValueError as e:
        return None, empty, f"The runs directory is refused: {e}"
    try:
        frame = api.runs_frame(runs_dir)
    except api.RunDirError as e:
        return None, empty, f"The runs directory cannot be read: {e}"
    frame = _with_user_runs(runs_dir, frame)
    if frame.empty:
        return runs_dir, frame, f"No runs in `{runs_dir}` yet: start one on the Runs page or choose another directory."
    return runs_dir, frame, None


def _with_user_runs(runs_dir: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus the runs of the user runs folder (where the Runs page starts runs), when that is
    another folder; a name taken already is shown as ``<folder>/<name>``."""
    user = api.user_runs_dir()
    try:
        if not user.is_dir() or user.resolve() == runs_dir.resolve():
            return frame
        extra = api.runs_frame(user)
    except (OSError, api.RunDirError):
        return frame
    if extra.empty:
        return frame
    taken = set(frame["run"])
    extra = extra.assign(run=[f"{user.name}/{r}" if r in taken else r for r in extra["run"]])
    return extra if frame.empty else pd.concat([frame, extra], ignore_index=True)


def _default_run(runs: pd.DataFrame) -> str:
    """``$ESNET_DEFAULT_RUN`` when it names a run here (``make results`` opens on the ES-Net run); else the
    first run (by name) that has a last.pt (what the model pages load), so they open on a usable run; else the first."""
    wanted = os.environ.get("ESNET_DEFAULT_RUN")
    if wanted and wanted in set(runs["run"]):
        return wanted
    for name, path in zip(runs["run"], runs["path"]):
        if (Path(path) / "checkpoints" / "last.pt").is_file():
            return name
    return runs["run"].iloc[0]


def sidebar() -> Selection:
    """Draw the shared sidebar and hand its :class:`Selection` to the page's :func:`current`."""
    st.session_state.setdefault(KEY_RUNS_DIR, str(api.default_runs_dir()))
    st.session_state.setdefault(KEY_DATASET_ROOT, str(api.default_dataset_root()))
    with st.sidebar:
        st.text_input("Runs directory", key=KEY_RUNS_DIR, help="A folder of run directories (esnet train --out).")
        runs_dir, runs, problem = _runs(st.session_state[KEY_RUNS_DIR])
        names = list(runs["run"])
        run = None
        if names:
            wanted = st.session_state.pop(_KEY_FOCUS, None)
            if isinstance(wanted, Path):  # a run directory: its name as listed (a user run may be "<folder>/<name>")
                listed = [n for n, p in zip(runs["run"], runs["path"]) if Path(p) == wanted]
                wanted = listed[0] if listed else None
            if wanted in names:
                st.session_state[KEY_RUN] = wanted
            if st.session_state.get(KEY_RUN) not in names and st.session_state.get(_KEY_CHOICE) in names:
                st.session_state[KEY_RUN] = st.session_state[_KEY_CHOICE]  # the widget's state was dropped
            if st.session_state.get(KEY_RUN) not in names:
                st.session_state[KEY_RUN] = _default_run(runs)
            label = lambda n: f"{n} ({runs.loc[runs['run'] == n, 'state'].iloc[0]})"  # noqa: E731
            if st.session_state.get(_KEY_LABEL) not in (None, label(st.session_state[KEY_RUN])):
                # The browser holds a select box's value as its label: set it again, so the
                # new state shows ("journey (starting)" -> "journey (running)") instead of the old.
                st.session_state[KEY_RUN] = st.session_state[KEY_RUN]
            run = st.selectbox("Run", names, key=KEY_RUN, format_func=label)
            st.session_state[_KEY_LABEL] = label(run)
            st.session_state[_KEY_CHOICE] = run  # the user's choice, kept when the run's state (label) changes
        elif problem:
            st.caption(problem)
        st.text_input("Dataset root", key=KEY_DATASET_ROOT,
                      help="Where probe and gallery images are read from when a run ships without them.")
        dataset_root, dataset_problem = None, None
        try:
            dataset_root = api.confine_path(st.session_state[KEY_DATASET_ROOT], _roots())
        except ValueError as e:
            dataset_problem = f"The dataset root is refused: {e}"
            st.caption(dataset_problem)
    sel = Selection(runs_dir=runs_dir, runs=runs, run=run, dataset_root=dataset_root, problem=problem,
                    dataset_problem=dataset_problem)
    st.session_state[_KEY_SELECTION] = sel
    return sel


def focus(run: str) -> None:
    """Select ``run`` in the sidebar on the next script run (call before ``st.rerun()``)."""
    st.session_state[_KEY_FOCUS] = run


def focus_dir(run_dir: str | Path) -> None:
    """:func:`focus` on the run in directory ``run_dir``, by whatever name the sidebar lists it under
    (a user run whose name the runs directory has too is ``<folder>/<name>``, see :func:`_with_user_runs`)."""
    st.session_state[_KEY_FOCUS] = Path(run_dir).resolve()


def current() -> Selection:
    """The :class:`Selection` the router's sidebar drew in this script run (call once per page).

    When a page file runs without the router (e.g. ``streamlit run pages/x.py``), the sidebar
    is drawn here instead.
    """
    sel = st.session_state.pop(_KEY_SELECTION, None)
    return sidebar() if sel is None else sel


def show_no_runs(sel: Selection) -> bool:
    """Show why there are no runs (warning for a bad directory, info for an empty one); True if shown."""
    if sel.runs_dir is None:
        st.warning(sel.problem)
        return True
    if sel.runs.empty:
        st.info(sel.problem)
        return True
    return False


def require_runs(sel: Selection) -> None:
    """:func:`show_no_runs`, then stop the page when there are no runs."""
    if show_no_runs(sel):
        st.stop()


def require_run(sel: Selection) -> Path:
    """The focused run's directory; stops the page with a message when there is none."""
    require_runs(sel)
    return sel.run_path()
