"""Progress bars for the dashboard's long waits (embedding, re-ranking, projections).

A :class:`Bar` is created *inside* the cached function that does the work (``app/cache.py``):
Streamlit replays what a cached function drew, so a bar made outside it could not be updated
from inside, and a bar made inside and emptied at the end replays as nothing on a cache hit.
Updates are throttled, so a replay stays a handful of messages.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import streamlit as st

T = TypeVar("T")

_MIN_INTERVAL_S = 0.5
"""Least time between two drawn updates of one bar (the last update of a stage is always drawn)."""


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


class Bar:
    """``bar(stage, done, total)`` draws "label · stage: done/total · about N s left"; ``close()`` removes it."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.slot = st.empty()
        self.stage_start: dict[str, float] = {}
        self.last_drawn = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        start = self.stage_start.setdefault(stage, now)
        if done < total and now - self.last_drawn < _MIN_INTERVAL_S:
            return
        self.last_drawn = now
        frac = 0.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
        text = f"{self.label} · {stage}: {done:,}/{total:,}"
        if 0 < done < total:
            text += f" · about {_seconds((now - start) / done * (total - done))} left"
        self.slot.progress(frac, text=text)

    def close(self) -> None:
        self.slot.empty()


def with_bar(label: str, work: Callable[[Callable[[str, int, int], None]], T]) -> T:
    """``work(progress)`` with a :class:`Bar` that is removed afterwards, whatever happens."""
    bar = Bar(label)
    try:
        return work(bar)
    finally:
        bar.close()


_IN_FLIGHT: dict[str, tuple[threading.Thread, dict[str, object], float]] = {}
_IN_FLIGHT_LOCK = threading.Lock()


def ticking(label: str, stage: str, work: Callable[[], T], *, expected_s: float, key: str | None = None) -> T:
    """Run ``work()`` (which reports no counts, e.g. UMAP or t-SNE) with a bar of elapsed seconds.

    The work runs in a helper thread while this (the script) thread redraws the bar twice a
    second: elapsed seconds of an estimate of ``expected_s``, never shown as done before it is.
    Exceptions from ``work`` are raised here.

    A script run that is interrupted (the user moves on) leaves its helper thread working. With a
    ``key``, a call while work of the same key is still running waits for that work (its bar
    counting from when it started) instead of starting it a second time on the same cores.
    """
    with _IN_FLIGHT_LOCK:
        flight = _IN_FLIGHT.get(key) if key is not None else None
        if flight is None or not flight[0].is_alive():
            box: dict[str, object] = {}

            def target() -> None:
                try:
                    box["value"] = work()
                except BaseException as e:  # handed to the script thread(s), which raise it
                    box["error"] = e
                finally:
                    with _IN_FLIGHT_LOCK:
                        if key is not None and _IN_FLIGHT.get(key, (None,))[0] is threading.current_thread():
                            del _IN_FLIGHT[key]

            flight = (threading.Thread(target=target, name=f"esnet-{stage}", daemon=True), box, time.monotonic())
            if key is not None:
                _IN_FLIGHT[key] = flight
            flight[0].start()
    thread, box, start = flight
    bar = Bar(label)
    try:
        while thread.is_alive():
            elapsed = time.monotonic() - start
            left = max(expected_s - elapsed, 0.0)
            estimate = f"about {_seconds(left)} left (estimate)" if left > 0 else "taking longer than estimated"
            bar.slot.progress(min(elapsed / max(expected_s, 1e-6), 0.99),
                              text=f"{label} · {stage}: {_seconds(elapsed)} elapsed · {estimate}")
            thread.join(_MIN_INTERVAL_S)
    finally:
        bar.close()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
