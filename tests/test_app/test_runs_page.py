"""AppTests of the Runs page (the landing page): runs table, start/stop, sidebar paths, demo dataset."""
from pathlib import Path

import pytest

from app import state
from esnet import api
from esnet.engine import rundir
from esnet.data.demo import DEMO_VERSION
from tests.synthetic import make_run
from tests.test_app.runpages import frame_with, open_app


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_app.runpages import tiny_demo

    return tiny_demo(tmp_path_factory)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    d = tmp_path / "runs"
    make_run(d / "esnet-p")
    make_run(d / "esnet-avg", pool="avg")
    make_run(d / "live", state="running")  # this test process holds its lock: "running"
    make_run(d / "crashed", state="failed")
    return d


def test_home_content_and_demo_dataset_counts(runs, demo_root, monkeypatch) -> None:
    at = open_app(monkeypatch, runs, demo_root)
    assert "Erasing Salient Parts" in at.title[0].value
    df = frame_with(at, "split")
    assert list(df["split"]) == ["train", "query", "gallery"]
    # 12 ids: half train, half test (query/gallery share ids; the gallery may add distractor pid 0).
    assert df.loc[df["split"] == "train", "ids"].item() == 6
    assert df.loc[df["split"] == "query", "ids"].item() == 6
    assert df["cameras"].min() >= 4


def test_broken_demo_dataset_is_reported(runs, tmp_path, monkeypatch) -> None:
    broken = tmp_path / "demo_data"
    (broken / "query").mkdir(parents=True)
    (broken / "query" / "not_a_market_name.jpg").write_bytes(b"x")
    (broken / ".complete").write_text(f'{{"version": {DEMO_VERSION}}}')  # current marker: read, not regenerated
    at = open_app(monkeypatch, runs, broken)
    assert "could not be read" in at.error[0].value
    assert "not_a_market_name.jpg" in at.error[0].value


def test_table_lists_every_run_with_state_best_metrics_and_p(runs, demo_root, monkeypatch) -> None:
    at = open_app(monkeypatch, runs, demo_root)
    df = frame_with(at, "best_mAP").set_index("run")
    assert sorted(df.index) == ["crashed", "esnet-avg", "esnet-p", "live"]
    assert df.loc["esnet-p", "state"] == "finished"
    assert df.loc["live", "state"] == "running"
    assert df.loc["crashed", "state"] == "failed" and "boom" in df.loc["crashed", "error"]
    # make_run: mAP 0.3 at epoch 2, 0.4 at epoch 4; R1 = mAP + 0.2; p.global = 3 + 0.1 * epoch.
    assert df.loc["esnet-p", "best_mAP"] == pytest.approx(40.0)
    assert df.loc["esnet-p", "best_R1"] == pytest.approx(60.0)
    assert df.loc["esnet-p", "p_global"] == pytest.approx(3.4)
    assert df.loc["esnet-p", "p_erase"] == pytest.approx(3.8)
    assert rundir.read_config(runs / "esnet-p").model.p_init == 3.0
    assert df.loc["esnet-p", "p_moved"] == pytest.approx(0.8)  # erase: 3.8 - p_init
    assert df.loc["esnet-avg", "p_moved"] != df.loc["esnet-avg", "p_moved"]  # NaN: no p to learn
    assert df.loc["esnet-avg", "pool"] == "avg"
    assert "path" not in df.columns


@pytest.mark.parametrize("typed, message", [
    ("{tmp}/nowhere", "does not exist"),
    ("/etc", "outside the allowed roots"),
    ("{runs}/../../../..", "'..' may not climb out"),
    ("{tmp}/escape", "symlink"),
    ("", "path is empty"),
])
def test_bad_runs_dir_gives_a_warning_not_a_traceback(typed, message, runs, demo_root, tmp_path, monkeypatch) -> None:
    (tmp_path / "escape").symlink_to("/etc")
    at = open_app(monkeypatch, runs, demo_root, allowed=[tmp_path])
    at.sidebar.text_input(key=state.KEY_RUNS_DIR).set_value(typed.format(tmp=tmp_path, runs=runs)).run()
    assert not at.exception, at.exception
    assert any(message in w.value for w in at.warning), [w.value for w in at.warning]
    assert len(at.dataframe) == 1  # only the demo overview; no runs table, no start form
    assert not at.get("expander")


def test_empty_runs_dir_gives_info_and_an_open_start_form(tmp_path, demo_root, monkeypatch) -> None:
    empty = tmp_path / "runs"
    empty.mkdir()
    at = open_app(monkeypatch, empty, demo_root)
    assert any("No runs in" in i.value for i in at.info)
    assert at.text_input(key="runs.name") is not None


def test_start_form_starts_training_with_the_chosen_settings(runs, demo_root, monkeypatch) -> None:
    calls = []

    def fake_start(runs_dir, name, **kwargs):
        calls.append((Path(runs_dir), name, kwargs))
        make_run(Path(runs_dir) / name, state="running")
        return api.TrainingJob(pid=4242, run_dir=str(Path(runs_dir) / name), log="train.log", command=("esnet",))

    monkeypatch.setattr(api, "start_training", fake_start)
    at = open_app(monkeypatch, runs, demo_root)
    at.text_input(key="runs.name").set_value("fresh")
    at.selectbox(key="runs.pool").set_value("max")
    at.number_input(key="runs.epochs").set_value(3)
    at.form_submit_button[0].click().run()
    assert not at.exception, at.exception
    (runs_dir, name, kwargs), = calls
    assert runs_dir == runs.parent / "user-runs" and name == "fresh"  # the user runs folder, not the demo runs
    assert kwargs["warmup_epochs"] is None and kwargs["milestones"] is None  # empty fields: scaled
    assert kwargs["pool"] == "max" and kwargs["epochs"] == 3 and kwargs["dataset"] == "demo"
    assert kwargs["root"] == demo_root.resolve()
    assert "Started `fresh` (pid 4242)" in at.success[0].value
    assert at.sidebar.selectbox(key=state.KEY_RUN).value == "fresh"  # the new run is focused
    assert "fresh" in list(frame_with(at, "best_mAP")["run"])


def test_start_form_focuses_the_new_run_when_the_runs_directory_has_its_name(runs, demo_root, monkeypatch) -> None:
    # The form starts runs in the user runs folder; a name the runs directory has too is listed there
    # as "user-runs/<name>", and that (the run just started) is the one to select, not the other.
    def fake_start(runs_dir, name, **kwargs):
        make_run(Path(runs_dir) / name, state="running")
        return api.TrainingJob(pid=4242, run_dir=str(Path(runs_dir) / name), log="train.log", command=("esnet",))

    monkeypatch.setattr(api, "start_training", fake_start)
    at = open_app(monkeypatch, runs, demo_root)
    at.text_input(key="runs.name").set_value("esnet-avg")
    at.form_submit_button[0].click().run()
    assert not at.exception, at.exception
    assert at.sidebar.selectbox(key=state.KEY_RUN).value == "user-runs/esnet-avg"


@pytest.mark.parametrize("name, message", [("taken", "already holds a run"), ("../up", "run name must use")])
def test_start_form_reports_a_taken_or_bad_name(name, message, runs, demo_root, monkeypatch) -> None:
    make_run(runs.parent / "user-runs" / "taken")
    at = open_app(monkeypatch, runs, demo_root)
    at.text_input(key="runs.name").set_value(name)
    at.form_submit_button[0].click().run()  # the real api.start_training: it refuses before spawning
    assert not at.exception, at.exception
    assert message in at.error[0].value and "Cannot start the run" in at.error[0].value


def test_start_form_refuses_weights_outside_the_allowed_roots(runs, demo_root, monkeypatch) -> None:
    monkeypatch.setattr(api, "start_training", lambda *a, **k: pytest.fail("must not start"))
    at = open_app(monkeypatch, runs, demo_root)
    at.text_input(key="runs.name").set_value("fresh")
    at.text_input(key="runs.weights").set_value("/etc/passwd")
    at.form_submit_button[0].click().run()
    assert not at.exception, at.exception
    assert "Cannot start the run" in at.error[0].value and "/etc/passwd" in at.error[0].value


def test_start_form_refuses_a_missing_dataset_root(runs, demo_root, tmp_path, monkeypatch) -> None:
    at = open_app(monkeypatch, runs, demo_root, allowed=[tmp_path])
    at.sidebar.text_input(key=state.KEY_DATASET_ROOT).set_value(str(tmp_path / "no-data")).run()
    at.text_input(key="runs.name").set_value("fresh")
    at.form_submit_button[0].click().run()
    assert not at.exception, at.exception
    assert "does not exist" in at.error[0].value and "no-data" in at.error[0].value
    assert not (runs / "fresh").exists()


def test_stop_button_stops_the_chosen_running_run(runs, demo_root, monkeypatch) -> None:
    stopped = []
    monkeypatch.setattr(api, "stop_training", lambda d, timeout_s: stopped.append(Path(d).name) or "stopped")
    at = open_app(monkeypatch, runs, demo_root)
    assert at.selectbox(key="runs.stop_run").options == ["live"]
    at.button(key="runs.stop").click().run()
    assert stopped == ["live"]
    assert "live: stopped" in at.success[0].value  # shown after a rerun, so the sidebar is redrawn with it


def test_sidebar_choices_survive_a_page_switch(runs, demo_root, monkeypatch) -> None:
    at = open_app(monkeypatch, runs, demo_root)
    at.sidebar.selectbox(key=state.KEY_RUN).set_value("esnet-avg").run()
    at.switch_page("../pages/monitor.py").run()
    assert at.title[0].value.endswith("esnet-avg")
    at.switch_page("../pages/runs.py").run()
    assert at.sidebar.selectbox(key=state.KEY_RUN).value == "esnet-avg"


@pytest.mark.parametrize("field, value, message", [
    ("runs.size", "0x0", "data.height must be > 0, got 0"),
    ("runs.warmup", "two", "warm-up epochs must be a whole number"),
    ("runs.decays", "5;7", "decay epochs must be comma-separated epochs"),
])
def test_start_form_validates_before_starting(field, value, message, runs, demo_root, monkeypatch) -> None:
    at = open_app(monkeypatch, runs, demo_root)
    at.text_input(key="runs.name").set_value("fresh")
    at.text_input(key=field).set_value(value)
    at.form_submit_button[0].click().run()
    assert not at.exception, at.exception
    assert "Cannot start the run" in at.error[0].value and message in at.error[0].value
    assert not (runs.parent / "user-runs" / "fresh").exists()


def test_form_schedule_fields_reach_start_training(runs, demo_root, monkeypatch) -> None:
    calls = []
    def fake_start(runs_dir, name, **kwargs):
        calls.append(kwargs)
        raise ValueError("not started")

    monkeypatch.setattr(api, "start_training", fake_start)
    at = open_app(monkeypatch, runs, demo_root)
    at.text_input(key="runs.name").set_value("fresh")
    at.text_input(key="runs.warmup").set_value("1")
    at.text_input(key="runs.decays").set_value("2, 3")
    at.form_submit_button[0].click().run()
    assert (calls[0]["warmup_epochs"], calls[0]["milestones"]) == (1, (2, 3))


def test_sidebar_lists_user_runs_and_keeps_the_selection_when_the_state_changes(runs, demo_root, monkeypatch) -> None:
    user = runs.parent / "user-runs"
    make_run(user / "mine", state="running")
    make_run(user / "esnet-p")  # a name the runs directory has too
    at = open_app(monkeypatch, runs, demo_root)
    names = at.sidebar.selectbox(key=state.KEY_RUN).options
    assert names[-2:] == ["user-runs/esnet-p (finished)", "mine (running)"]  # after the runs directory's, a taken name prefixed
    at.sidebar.selectbox(key=state.KEY_RUN).set_value("mine").run()
    rundir.write_status(user / "mine", state="stopped", epoch=2, total_epochs=4, error="stopped by SIGINT")
    at.run()
    assert at.sidebar.selectbox(key=state.KEY_RUN).value == "mine"
    df = frame_with(at, "best_mAP").set_index("run")
    assert df.loc["mine", "state"] == "stopped"


def test_a_run_that_died_at_launch_shows_the_logs_error(runs, demo_root, monkeypatch) -> None:
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = runs.parent / "user-runs" / "zero"
    run.mkdir(parents=True)
    rundir.write_launch(run, dead.pid)
    (run / "train.log").write_text("error: data.height must be > 0, got 0\n")
    at = open_app(monkeypatch, runs, demo_root)
    df = frame_with(at, "best_mAP").set_index("run")
    assert df.loc["zero", "state"] == "failed" and df.loc["zero", "error"] == "error: data.height must be > 0, got 0"


def test_resume_button_resumes_a_stopped_run(runs, demo_root, monkeypatch) -> None:
    rundir.write_status(runs / "esnet-avg", state="stopped", epoch=2, total_epochs=4, error="stopped by SIGINT")
    resumed = []

    def fake_resume(d, *, allow_code_change=False):
        resumed.append(Path(d).name)
        assert not allow_code_change  # no checkpoint, so no code to compare: nothing to allow
        return api.TrainingJob(pid=77, run_dir=str(d), log="train.log", command=("esnet",))

    monkeypatch.setattr(api, "resume_training", fake_resume)
    at = open_app(monkeypatch, runs, demo_root)
    assert at.selectbox(key="runs.resume_run").options == ["crashed", "esnet-avg"]
    at.selectbox(key="runs.resume_run").set_value("esnet-avg")
    at.button(key="runs.resume").click().run()
    assert not at.exception, at.exception
    assert resumed == ["esnet-avg"] and "Resumed `esnet-avg` (pid 77)" in at.success[0].value
    assert at.sidebar.selectbox(key=state.KEY_RUN).value == "esnet-avg"


def _other_code_checkpoint(run: Path, changed: str) -> None:
    """A stopped ``run`` whose last.pt was saved by esnet code that differed from today's in ``changed``."""
    from esnet.engine.code import code_identity
    from tests.synthetic import random_checkpoint

    rundir.write_status(run, state="stopped", epoch=2, total_epochs=4, error="stopped by SIGINT")
    now = code_identity([changed])
    random_checkpoint(run / "checkpoints" / "last.pt", overrides={"model.backbone": "mobilenet_v2"},
                      extra={"code": {**now, "files": {**now["files"], changed: "0" * 64}}})


def _consent(at):
    return next(c for c in at.checkbox if c.label.startswith("Continue under the current code"))


def test_a_run_trained_with_other_code_resumes_only_once_the_user_allows_it(runs, demo_root, monkeypatch) -> None:
    _other_code_checkpoint(runs / "esnet-avg", "model/esnet.py")
    _other_code_checkpoint(runs / "esnet-p", "losses.py")
    resumed = []

    def fake_resume(d, *, allow_code_change=False):
        resumed.append((Path(d).name, allow_code_change))
        return api.TrainingJob(pid=78, run_dir=str(d), log="train.log", command=("esnet",))

    monkeypatch.setattr(api, "resume_training", fake_resume)
    at = open_app(monkeypatch, runs, demo_root)
    at.selectbox(key="runs.resume_run").set_value("esnet-avg").run()
    assert not at.exception, at.exception
    warning = next(w.value for w in at.warning if "trained with other code" in w.value)
    assert "`esnet/model/esnet.py` changed since its last checkpoint" in warning
    assert at.button(key="runs.resume").disabled and resumed == []
    _consent(at).check().run()
    assert not at.button(key="runs.resume").disabled
    # consent is per run: another run with other code starts unticked, its button disabled
    at.selectbox(key="runs.resume_run").set_value("esnet-p").run()
    assert "`esnet/losses.py` changed" in next(w.value for w in at.warning if "trained with other code" in w.value)
    assert not _consent(at).value and at.button(key="runs.resume").disabled
    at.selectbox(key="runs.resume_run").set_value("esnet-avg").run()
    assert at.button(key="runs.resume").disabled  # back again: asked again
    _consent(at).check().run()
    at.button(key="runs.resume").click().run()
    assert not at.exception, at.exception
    assert resumed == [("esnet-avg", True)] and "Resumed `esnet-avg` (pid 78)" in at.success[0].value


def test_an_unreadable_checkpoint_is_a_warning_and_no_resume_button(runs, demo_root, monkeypatch) -> None:
    rundir.write_status(runs / "esnet-avg", state="stopped", epoch=2, total_epochs=4, error="stopped by SIGINT")
    (runs / "esnet-avg" / "checkpoints").mkdir()
    (runs / "esnet-avg" / "checkpoints" / "last.pt").write_bytes(b"not a torch file")
    at = open_app(monkeypatch, runs, demo_root)
    at.selectbox(key="runs.resume_run").set_value("esnet-avg").run()
    assert not at.exception, at.exception
    warning = next(w.value for w in at.warning if "cannot be resumed" in w.value)
    assert "`esnet-avg` cannot be resumed" in warning and "last.pt" in warning
    assert not [b for b in at.button if b.key == "runs.resume"]
