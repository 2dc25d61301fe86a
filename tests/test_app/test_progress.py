"""Progress bars of long waits: counts and ETA text, throttling, the ticking bar, and no trace on a cache hit."""
import time

import pytest
from streamlit.testing.v1 import AppTest

from app import progress


class FakeSlot:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []
        self.emptied = False

    def progress(self, value: float, text: str = "") -> None:
        self.calls.append((value, text))

    def empty(self) -> None:
        self.emptied = True


def _bar(label: str) -> tuple[progress.Bar, FakeSlot]:
    bar = progress.Bar.__new__(progress.Bar)
    bar.label, bar.slot, bar.stage_start, bar.last_drawn = label, FakeSlot(), {}, 0.0
    return bar, bar.slot


def test_bar_shows_counts_eta_and_always_the_end_of_a_stage(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    bar, slot = _bar("Evaluating")
    bar("gallery", 0, 15913)
    now[0] = 110.0
    bar("gallery", 1000, 15913)  # 10 s for 1,000 images: 14,913 left -> ~149 s
    now[0] = 110.1
    bar("gallery", 1064, 15913)  # throttled: 0.1 s after the last drawn update
    bar("gallery", 15913, 15913)  # the end of a stage is always drawn
    assert [round(v, 4) for v, _ in slot.calls] == [0.0, round(1000 / 15913, 4), 1.0]
    assert slot.calls[1][1] == "Evaluating · gallery: 1,000/15,913 · about 2.5 min left"
    assert slot.calls[2][1] == "Evaluating · gallery: 15,913/15,913"


def test_ticking_returns_the_value_and_raises_the_error():
    assert progress.ticking("Projecting", "umap", lambda: 41 + 1, expected_s=0.1) == 42

    def boom():
        time.sleep(0.05)
        raise ValueError("bad features")

    with pytest.raises(ValueError, match="bad features"):
        progress.ticking("Projecting", "umap", boom, expected_s=0.1)


def test_ticking_with_a_key_joins_the_work_in_flight_instead_of_starting_it_again():
    # An interrupted script run leaves its helper thread computing; the rerun must wait for that
    # work, not start a second copy on the same two cores.
    import threading

    release, calls, results = threading.Event(), [], []

    def slow():
        calls.append("slow")
        release.wait(10)
        return "projected"

    first = threading.Thread(target=lambda: results.append(
        progress.ticking("Projecting", "umap", slow, expected_s=0.1, key="k")))
    first.start()
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    threading.Timer(0.3, release.set).start()
    again = progress.ticking("Projecting", "umap", lambda: calls.append("again") or "twice", expected_s=0.1, key="k")
    first.join(5)
    assert calls == ["slow"] and again == "projected" and results == ["projected"]
    # once done, the same key runs its work anew (e.g. after the cache was cleared); other keys never wait
    assert progress.ticking("Projecting", "umap", lambda: "fresh", expected_s=0.1, key="k") == "fresh"
    assert "k" not in progress._IN_FLIGHT


def _script():
    import streamlit as st

    from app import progress

    @st.cache_resource(show_spinner=False)
    def work(n: int) -> int:
        return progress.with_bar("Embedding", lambda bar: sum(bar("gallery", i, n) or i for i in range(n + 1)))

    st.write(f"value {work(4)}")
    st.button("again")


def test_a_cached_wait_leaves_no_bar_and_replays_nothing_visible():
    at = AppTest.from_function(_script).run()
    assert not at.exception, at.exception
    assert [m.value for m in at.markdown] == ["value 10"]
    assert not at.get("progress")
    at.button[0].click().run()  # a cache hit: the bar's replay ends emptied as well
    assert not at.exception and [m.value for m in at.markdown] == ["value 10"] and not at.get("progress")
