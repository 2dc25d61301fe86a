"""File names that are not valid UTF-8 are displayed escaped, never sent raw to the browser."""
import os

import pandas as pd

from app import model_views
from esnet import api


def test_printable_escapes_undecodable_bytes_and_keeps_text() -> None:
    raw = os.fsdecode(b"/data/caf\xe9_0001_c1.jpg")  # Latin-1 bytes: a lone surrogate in Python
    shown = api.printable(raw)
    assert shown == "/data/caf\\xe9_0001_c1.jpg"
    shown.encode("utf-8")  # sendable
    assert api.printable("/data/café_c1.jpg") == "/data/café_c1.jpg"


def test_printable_paths_makes_a_frame_csv_safe() -> None:
    # object dtype, as esnet builds path columns: an arrow string column cannot hold the surrogate
    frame = pd.DataFrame({"path": pd.Series([os.fsdecode(b"a\xff.jpg"), "b.jpg"], dtype=object), "ap": [0.5, 1.0]})
    safe = model_views.printable_paths(frame)
    assert list(safe["path"]) == ["a\\xff.jpg", "b.jpg"]
    assert safe.to_csv(index=False).encode("utf-8").startswith(b"path,ap")
    assert frame["path"][0] != safe["path"][0]  # the original (openable) paths are untouched
