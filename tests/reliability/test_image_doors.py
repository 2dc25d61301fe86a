"""The bad-image kinds of test_bad_images through the other doors: dataset checking
(``esnet data check``), the ``esnet search`` command, and the Search page's upload core.

Each door names the file and the reason and goes on with the rest; the messages are the
ones ``esnet.data.images`` gives, since every door decodes through it.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from app import model_views
from esnet import api, cli
from esnet.data.check import verify_image
from tests.reliability.test_bad_images import CASES, IDS, Case, _deny_unreadable, _no_hang, built  # noqa: F401

# Kinds a browser upload cannot be: they are about the file system, not the bytes.
NOT_UPLOADS = {"directory", "unreadable", "fifo", "dev_zero", "dangling", "symlink_loop", "oversize", "missing"}


@pytest.fixture(scope="module")
def small_gallery(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gallery")
    for p in sorted((demo_data / "bounding_box_test").glob("*.jpg"))[::40]:  # 21 images
        shutil.copy(p, out / p.name)
    return out


@pytest.fixture(scope="module")
def inf(demo_checkpoint: Path) -> api.Inference:
    return api.load_inference(demo_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def gallery(inf: api.Inference, small_gallery: Path) -> api.Gallery:
    return api.load_gallery(inf, folder=small_gallery)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_dataset_check(case: Case, built: dict[str, str], monkeypatch: pytest.MonkeyPatch, record) -> None:
    """``esnet data check`` verifies images with the loaders' own rules: a FIFO or /dev/zero never hangs it."""
    _deny_unreadable(monkeypatch)
    with _no_hang():
        reason = verify_image(built[case.id])
    if case.size is not None:
        assert reason is None, reason
        record(case.label, "esnet data check", "accepted")
    else:
        assert reason is not None and case.reason in reason, (case.reason, reason)
        record(case.label, "esnet data check", "unreadable-image problem", reason)


def test_search_command_answers_good_queries_and_names_each_bad_one(built, small_gallery, demo_checkpoint, tmp_path,
                                                                   monkeypatch, capsys, record) -> None:
    _deny_unreadable(monkeypatch)
    queries = [built[c.id] for c in CASES]
    with _no_hang(300):
        code = cli.main(["search", "--checkpoint", str(demo_checkpoint), "--gallery", str(small_gallery),
                         "--query", *queries, "--topk", "3", "--json", "--device", "cpu"])
    out = json.loads(capsys.readouterr().out)
    assert code == 2  # some queries were refused
    answers = out["queries"]
    assert [a["query"] for a in answers] == queries
    for case, answer in zip(CASES, answers):
        if case.size is not None:
            assert answer["ok"] and len(answer["hits"]) == 3, answer
            record(case.label, "esnet search", "searched: 3 hits")
        else:
            assert not answer["ok"] and case.reason in answer["error"], (case.reason, answer)
            record(case.label, "esnet search", "not searched, others answered", answer["error"])


@pytest.mark.parametrize("case", [c for c in CASES if c.id not in NOT_UPLOADS], ids=lambda c: c.id)
def test_search_page_upload(case: Case, built: dict[str, str], small_gallery, inf, gallery, record) -> None:
    """The Search page decodes uploads with ``model_views.search_uploads``: a bad one is an on-page error."""
    name = os.path.basename(built[case.id])
    data = Path(built[case.id]).read_bytes()
    good = (small_gallery / sorted(os.listdir(small_gallery))[0]).read_bytes()
    outcome = model_views.search_uploads(inf, gallery, [(name, data), ("good.jpg", good)], topk=3)
    if case.size is not None:
        assert [q.name for q in outcome.queries] == [name, "good.jpg"] and not outcome.errors
        assert outcome.result.indices.shape == (2, 3)
        record(case.label, "Search page upload", "searched")
    else:
        assert [q.name for q in outcome.queries] == ["good.jpg"] and len(outcome.errors) == 1
        assert repr(name) in outcome.errors[0] and case.reason in outcome.errors[0], outcome.errors
        outcome.errors[0].encode("utf-8")  # displayable
        record(case.label, "Search page upload", "on-page error, other upload searched", outcome.errors[0])
