"""Reliability suite: a ``record`` fixture, and docs/reliability.md generated from the records.

Each test calls ``record(case, door, outcome, message)`` for every case it checks (an image
kind through ``load_rgb``, a bad checkpoint through ``esnet train --resume`` ...). At the
end of a run in which *every* test of tests/reliability was collected and none was
deselected (no ``-k``, ``-m``, single file or node id), docs/reliability.md is rewritten
atomically: one table row per record, with the result (pass/fail/skip) of the test that
recorded it; a test that recorded nothing gets one row from its docstring.

pytest-xdist (``make test`` runs ``-n 2``): each worker runs only part of the suite and the
controller may not even load this conftest (it does not collect), so the controller is
not relied on. Every worker writes its records and results as a JSON fragment into
``$TMPDIR/esnet-reliability-<testrunuid>/`` (the run id xdist gives all workers), then,
under an exclusive ``flock`` on that directory, counts the fragments; the worker that
finds all ``workercount`` of them merges them and writes the document (and a ``.done``
marker so a later worker does not write it twice). Whatever the order in which workers
finish, the last one to take the lock sees every fragment. Without xdist the single
process merges its own records.

The table is deterministic (no times, temporary paths, pids or the clone's location; rows in collection order),
so re-running an unchanged suite leaves the file byte-identical. Set
``ESNET_RELIABILITY_DOC`` to another path to write elsewhere, or to ``0`` to not write.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

import esnet
from esnet.atomic import atomic_write_text

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PACKAGE_REPO = Path(esnet.__file__).resolve().parents[1]  # the clone esnet is imported from (the venv's)
DEFAULT_DOC = REPO / "docs" / "reliability.md"
DOC_ENV = "ESNET_RELIABILITY_DOC"

_RECORDS = pytest.StashKey[list]()
_RESULTS = pytest.StashKey[dict]()
_DESELECTED = pytest.StashKey[list]()
_DOCS = pytest.StashKey[dict]()

Record = Callable[..., None]


# --- recording -------------------------------------------------------------------------
def _scrub(text: str, temp_roots: list[str]) -> str:
    """One line, without temporary directories, pids or memory addresses (the table must not churn)."""
    text = " ".join(str(text).split())
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # undecodable file names: \udce9
    # Longest first, so a clone inside the temporary directory (/tmp/x/esnet) still reads <repo>.
    places = [(root, "<tmp>") for root in temp_roots if root] + [(str(r), "<repo>") for r in {REPO, PACKAGE_REPO}]
    for place, name in sorted(places, key=lambda pn: len(pn[0]), reverse=True):
        text = text.replace(place, name)
    text = re.sub(r"<tmp>/[^\s'\"/]+", "<tmp>", text)  # <basetemp>/test_x0/sub/a.jpg -> <tmp>/sub/a.jpg
    text = re.sub(r"\bpid \d+", "pid N", text)
    # Also independent of where the clone lives and of random names: a path's length (the 5,000-character
    # runs directory), how much of a long run of one letter a truncation keeps, mkstemp's 8 random characters.
    text = re.sub(r"\(\d[\d,]* characters\)", "(N characters)", text)
    text = re.sub(r"([A-Za-z])\1{19,}", r"\1\1\1…", text)
    text = re.sub(r"(\.[\w.-]+?\.)[a-z0-9_]{8}(\.tmp)\b", r"\1XXXXXXXX\2", text)
    text = re.sub(r"0x[0-9a-f]{6,}", "0x…", text)
    return text.replace("|", "\\|")


@pytest.fixture
def record(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Record:
    """``record(case, door, outcome, message="")`` adds a row to docs/reliability.md.

    Args:
        case: what was tried, e.g. "truncated JPEG".
        door: the entry point it went through, e.g. "load_rgb".
        outcome: what happened, e.g. "refused", "accepted (RGB 40x60)".
        message: the error message (or detail), scrubbed of temporary paths.
    """
    roots = [str(tmp_path_factory.getbasetemp()), tempfile.gettempdir()]
    records = request.config.stash[_RECORDS]

    def add(case: str, door: str, outcome: str, message: str = "") -> None:
        records.append({"nodeid": request.node.nodeid, "case": _scrub(case, roots), "door": _scrub(door, roots),
                        "outcome": _scrub(outcome, roots), "message": _scrub(message, roots)[:300]})

    return add


# --- hooks -----------------------------------------------------------------------------
def _ours(nodeid: str) -> bool:
    return nodeid.startswith("tests/reliability/")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "reliability_row(case, door, outcome): the docs/reliability.md row of a "
                                       "test that cannot take the record fixture (hypothesis tests)")
    config.stash[_RECORDS] = []
    config.stash[_RESULTS] = {}
    config.stash[_DESELECTED] = []
    config.stash[_DOCS] = {}


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        items[0].config.stash[_DESELECTED].extend(i.nodeid for i in items if _ours(i.nodeid))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    docs = config.stash[_DOCS]
    for item in items:
        if _ours(item.nodeid):
            marker = item.get_closest_marker("reliability_row")
            if marker is not None:
                docs[item.nodeid] = {"case": "", "door": "", "outcome": "", **marker.kwargs}
                continue
            fn = getattr(item, "function", None)
            doc = (fn.__doc__ or "").strip().splitlines() if fn is not None else []
            docs[item.nodeid] = {"case": doc[0] if doc else item.name, "door": item.name, "outcome": "checked"}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Results are kept per worker in module state (the hook gets no config).
    if not _ours(report.nodeid):
        return
    prev = _RESULT_LOG.get(report.nodeid, "pass")
    if report.failed:
        _RESULT_LOG[report.nodeid] = "fail"
    elif report.skipped and prev != "fail":
        _RESULT_LOG[report.nodeid] = "skip"
    elif report.when == "call" and prev not in ("fail", "skip"):
        _RESULT_LOG[report.nodeid] = "pass"


_RESULT_LOG: dict[str, str] = {}


def _expected_files() -> set[str]:
    return {f"tests/reliability/{p.name}" for p in HERE.glob("test_*.py")}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    target = os.environ.get(DOC_ENV, str(DEFAULT_DOC))
    if target in ("", "0"):
        return
    ours = [i.nodeid for i in session.items if _ours(i.nodeid)]
    fragment = {
        "collected": ours,
        "docs": config.stash[_DOCS],
        "deselected": config.stash[_DESELECTED],
        "results": {k: v for k, v in _RESULT_LOG.items() if k in set(ours)},
        "records": config.stash[_RECORDS],
    }
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        _maybe_write([fragment], Path(target))
        return
    shared = Path(tempfile.gettempdir()) / f"esnet-reliability-{workerinput['testrunuid']}"
    shared.mkdir(exist_ok=True)
    (shared / f"{workerinput['workerid']}.json").write_text(json.dumps(fragment), encoding="utf-8")
    with open(shared / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        parts = sorted(shared.glob("*.json"))
        if len(parts) < int(workerinput["workercount"]) or (shared / ".done").exists():
            return
        _maybe_write([json.loads(p.read_text(encoding="utf-8")) for p in parts], Path(target))
        (shared / ".done").touch()
        for p in parts:
            p.unlink()


def _maybe_write(fragments: list[dict], target: Path) -> None:
    """Write the document if the fragments cover the whole suite, each test with a result."""
    collected = [n for n in fragments[0]["collected"]]
    if not collected or any(f["deselected"] for f in fragments):
        return
    if {n.split("::")[0] for n in collected} != _expected_files():
        return  # a subset of the files was run
    results: dict[str, str] = {}
    for f in fragments:
        results.update(f["results"])
    if set(results) != set(collected):
        return  # interrupted (-x, Ctrl-C) or a worker crashed
    records: dict[str, list[dict]] = {}
    for f in fragments:
        for r in f["records"]:
            records.setdefault(r["nodeid"], []).append(r)
    docs = fragments[0]["docs"]
    atomic_write_text(target, render(collected, records, results, docs))


def render(collected: list[str], records: dict[str, list[dict]], results: dict[str, str],
           docs: dict[str, str]) -> str:
    """The markdown document: a summary line, then one table per test file."""
    lines = [
        "# Reliability and security checks",
        "",
        "Generated by `tests/reliability/` (see its conftest.py) at the end of a full run of that suite;",
        "do not edit by hand. Regenerate with `.venv/bin/python -m pytest -q tests/reliability/`.",
        "Each row is one case: what was tried, the door it went through, what happened and the message",
        "a user sees; *result* is the outcome of the test that checked it.",
        "",
    ]
    rows_total = passed = 0
    sections: dict[str, list[str]] = {}
    for nodeid in collected:
        file = nodeid.split("::")[0]
        fallback = docs.get(nodeid) or {"case": nodeid, "door": nodeid.split("::")[-1], "outcome": "checked"}
        rows = records.get(nodeid) or [{**fallback, "message": ""}]
        for r in rows:
            result = results.get(nodeid, "not run")
            rows_total += 1
            passed += result == "pass"
            msg = f"`{r['message']}`" if r["message"] else ""
            sections.setdefault(file, []).append(f"| {r['case']} | {r['door']} | {r['outcome']} | {msg} | {result} |")
    lines.append(f"{rows_total} cases, {passed} pass, {rows_total - passed} fail or skip.")
    lines.append("")
    for file, rows in sections.items():
        lines += [f"## {Path(file).stem.removeprefix('test_').replace('_', ' ')} (`{file}`)", "",
                  "| case | door | outcome | message | result |", "|---|---|---|---|---|", *rows, ""]
    return "\n".join(lines)
