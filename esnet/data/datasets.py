"""Dataset loaders: read a re-ID dataset on disk into a ``ReidData``.

Every loader returns absolute paths, 0-based camera ids (plus each sample's camera number as
in its file name, for display) and samples sorted by
path, so two loads of the same folder give identical results. Names that do not
follow a dataset's pattern raise ``DatasetError`` naming the file and the
pattern; nothing is skipped silently (Market-1501 junk, pid -1, is the one
documented exception and is recorded in ``ReidData.notes``).

Use ``load_dataset(name, root)``; ``DATASETS`` maps each name to its loader.
"""
from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from esnet.data.types import SPLITS, DatasetError, ReidData, Sample

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
VEHICLEID_TEST_SIZES = {"small": 800, "medium": 1600, "large": 2400}
DEFAULT_CAMERA_REGEX = r"c(\d+)"

_MARKET_RE = re.compile(r"^(-?\d+)_c(\d)s\d+_")
_MARKET_PATTERN = "PPPP_cCsS_FFFFFF_BB.jpg (e.g. 0002_c1s1_000451_03.jpg)"
_DUKE_RE = re.compile(r"^(\d+)_c(\d+)_f\d+")
_DUKE_PATTERN = "PPPP_cC_fFFFFFFF.jpg (e.g. 0001_c2_f0046182.jpg)"
_MSMT_RE = re.compile(r"^(\d+)_(\d+)_(\d+)_")
_MSMT_PATTERN = "PPPP_NNN_CC_<date><time>_FFFF_K.jpg (e.g. 0000_000_01_0303morning_0015_0.jpg)"
_VERI_RE = re.compile(r"^(\d+)_c(\d+)_")
_VERI_PATTERN = "PPPP_cCCC_FFFFFFFF_K.jpg (e.g. 0002_c002_00030600_0.jpg)"


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTS)


def _list_images(folder: str) -> list[str]:
    """Sorted absolute paths of the image files directly inside ``folder``."""
    with os.scandir(folder) as it:
        names = [e.name for e in it if _is_image(e.name) and e.is_file()]
    names.sort()
    return [os.path.join(folder, n) for n in names]


def _abs_root(root: str) -> str:
    """Absolute ``root``; raises when it does not exist."""
    if not os.path.exists(root):
        raise DatasetError(f"{root}: dataset root does not exist")
    return os.path.abspath(root)


def _find_root(root: str, required: Iterable[str], parents: Iterable[str]) -> str:
    """``root`` if it holds any of ``required``, else the first ``root/<parent>`` that does."""
    required = tuple(required)
    for candidate in (root, *(os.path.join(root, p) for p in parents)):
        if any(os.path.isdir(os.path.join(candidate, r)) for r in required):
            return candidate
    tried = ", ".join(repr(p) for p in parents)
    raise DatasetError(
        f"{root}: no dataset folders found; expected {list(required)} in it"
        + (f" or in one of its subfolders {tried}" if tried else "")
    )


def _split_folders(base: str, folders: dict[str, str], notes: list[str]) -> dict[str, str | None]:
    """Map each split to its folder under ``base``; a missing one becomes an empty split with a note."""
    out: dict[str, str | None] = {}
    for split in SPLITS:
        path = os.path.join(base, folders[split])
        if os.path.isdir(path):
            out[split] = path
        else:
            out[split] = None
            notes.append(f"{split}: folder {path} does not exist, split is empty")
    return out


def _read_lines(path: str) -> list[tuple[int, list[str]]]:
    """Non-blank lines of a list file as ``(line_number, whitespace-split fields)``."""
    with open(path, encoding="utf-8") as f:
        return [(i, line.split()) for i, line in enumerate(f, start=1) if line.strip()]


def _parse_pid(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DatasetError(f"{where}: identity {text!r} is not an integer") from None


ID_MAX = 2**31 - 1
"""Largest pid or camid: they are held in int64 arrays and summed, so keep far from overflow."""


def _make_data(name: str, root: str, splits: dict[str, list[Sample]], *,
               protocol: str = "standard", notes: Iterable[str] = ()) -> ReidData:
    for samples in splits.values():
        for s in samples:
            if not -1 <= s.pid <= ID_MAX or not 0 <= s.camid <= ID_MAX or not -1 <= s.camera <= ID_MAX:
                raise DatasetError(f"{s.path}: pid must be in [-1, {ID_MAX}], camid in [0, {ID_MAX}] and camera in "
                                   f"[-1, {ID_MAX}], got pid {s.pid}, camid {s.camid}, camera {s.camera}")
    return ReidData(
        name=name,
        root=root,
        train=tuple(sorted(splits["train"], key=lambda s: s.path)),
        query=tuple(sorted(splits["query"], key=lambda s: s.path)),
        gallery=tuple(sorted(splits["gallery"], key=lambda s: s.path)),
        protocol=protocol,
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- Market-1501 / demo


def _load_market_layout(name: str, root: str, parents: tuple[str, ...]) -> ReidData:
    base = _find_root(root, ("bounding_box_train", "query", "bounding_box_test"), parents)
    notes: list[str] = []
    folders = _split_folders(
        base, {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}, notes)
    splits: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    junk = {s: 0 for s in SPLITS}
    distractors = {s: 0 for s in SPLITS}
    for split, folder in folders.items():
        if folder is None:
            continue
        out = splits[split]
        for path in _list_images(folder):
            fname = os.path.basename(path)
            m = _MARKET_RE.match(fname)
            if m is None:
                raise DatasetError(f"{path}: file name does not match the Market-1501 pattern {_MARKET_PATTERN}")
            pid, cam = int(m.group(1)), int(m.group(2))
            if pid < -1:
                raise DatasetError(f"{path}: identity {pid} is invalid; Market-1501 ids are >= 0 or -1 (junk)")
            if cam < 1:
                raise DatasetError(f"{path}: camera c{cam} is invalid; Market-1501 cameras are numbered from 1")
            if pid == -1:
                junk[split] += 1
                continue
            if pid == 0:
                distractors[split] += 1
                if split != "gallery":
                    continue
            out.append(Sample(path, pid, cam - 1, split, cam))
    if sum(junk.values()):
        notes.append(
            f"dropped {sum(junk.values()):,} junk images (pid -1): train {junk['train']:,}, "
            f"query {junk['query']:,}, gallery {junk['gallery']:,}")
    if distractors["gallery"]:
        notes.append(f"kept {distractors['gallery']:,} distractor images (pid 0) in gallery")
    for split in ("train", "query"):
        if distractors[split]:
            notes.append(f"dropped {distractors[split]:,} distractor images (pid 0) from {split}; "
                         "distractors belong in the gallery only")
    return _make_data(name, base, splits, notes=notes)


def load_market1501(root: str) -> ReidData:
    """Market-1501 (Zheng et al., ICCV 2015).

    Layout: ``root/{bounding_box_train, query, bounding_box_test}/*.jpg``, or ``root`` a
    parent holding ``market1501/`` or ``Market-1501-v15.09.15/``. File names
    ``PPPP_cCsS_FFFFFF_BB*.jpg``; anything after the ``_cCsS_`` part is ignored, so
    augmented copies such as ``0002_c1s1_000451_03_1_blur.jpg`` parse too.

    Standard protocol: pid -1 (junk) is dropped from every split; pid 0 (distractors)
    is kept in the gallery only. Both are counted in ``notes``.
    """
    root = _abs_root(root)
    return _load_market_layout("market1501", root, ("market1501", "Market-1501-v15.09.15"))


def load_demo(root: str) -> ReidData:
    """The synthetic demo dataset: Market-1501 layout and file names (see ``load_market1501``)."""
    root = _abs_root(root)
    return _load_market_layout("demo", root, ())


# --------------------------------------------------------------------------- DukeMTMC-reID


def load_dukemtmcreid(root: str) -> ReidData:
    """DukeMTMC-reID (Zheng et al., ICCV 2017), 8 cameras.

    Layout: ``root/{bounding_box_train, query, bounding_box_test}/PPPP_cC_fFFFFFFF.jpg``,
    or ``root`` a parent holding ``DukeMTMC-reID/`` or ``dukemtmcreid/``.
    """
    root = _abs_root(root)
    base = _find_root(root, ("bounding_box_train", "query", "bounding_box_test"),
                      ("DukeMTMC-reID", "dukemtmcreid"))
    notes: list[str] = []
    folders = _split_folders(
        base, {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}, notes)
    splits: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for split, folder in folders.items():
        if folder is None:
            continue
        for path in _list_images(folder):
            m = _DUKE_RE.match(os.path.basename(path))
            if m is None:
                raise DatasetError(f"{path}: file name does not match the DukeMTMC-reID pattern {_DUKE_PATTERN}")
            cam = int(m.group(2))
            if not 1 <= cam <= 8:
                raise DatasetError(f"{path}: camera c{cam} is out of range; DukeMTMC-reID cameras are c1..c8")
            splits[split].append(Sample(path, int(m.group(1)), cam - 1, split, cam))
    return _make_data("dukemtmcreid", base, splits, notes=notes)


# --------------------------------------------------------------------------- MSMT17


def _msmt_samples(list_path: str, image_dir: str, split: str) -> list[Sample]:
    out = []
    for lineno, fields in _read_lines(list_path):
        where = f"{list_path}:{lineno}"
        if len(fields) != 2:
            raise DatasetError(f"{where}: expected '<relative path> <pid>', got {' '.join(fields)!r}")
        rel, pid_text = fields
        m = _MSMT_RE.match(os.path.basename(rel))
        if m is None:
            raise DatasetError(f"{where}: file name {rel!r} does not match the MSMT17 pattern {_MSMT_PATTERN}")
        cam = int(m.group(3))
        if not 1 <= cam <= 15:
            raise DatasetError(f"{where}: camera {cam:02d} in {rel!r} is out of range; MSMT17 cameras are 01..15")
        out.append(Sample(os.path.join(image_dir, rel), _parse_pid(pid_text, where), cam - 1, split, cam))
    return out


def load_msmt17(root: str) -> ReidData:
    """MSMT17 (Wei et al., CVPR 2018), V1 or V2, 15 cameras.

    Layout: ``root`` holding image folders ``train/`` + ``test/`` (V1) or
    ``mask_train_v2/`` + ``mask_test_v2/`` (V2) and the list files ``list_train.txt``,
    ``list_val.txt``, ``list_query.txt``, ``list_gallery.txt`` with lines
    ``<path relative to the image folder> <pid>``; or ``root`` a parent holding
    ``MSMT17_V1/``, ``MSMT17_V2/`` or ``msmt17/``. The camera is the third ``_`` field of
    the file name (``0000_000_01_0303morning_0015_0.jpg`` -> camera 01, 1-based).

    Following common practice (e.g. torchreid), the train split is ``list_train.txt``
    plus ``list_val.txt``: the validation images are training identities.
    """
    root = _abs_root(root)
    lists = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
    base = None
    for candidate in (root, *(os.path.join(root, p) for p in ("MSMT17_V1", "MSMT17_V2", "msmt17"))):
        if os.path.isfile(os.path.join(candidate, "list_query.txt")):
            base = candidate
            break
    if base is None:
        raise DatasetError(f"{root}: no MSMT17 list files found; expected {list(lists)} in it "
                           "or in a subfolder 'MSMT17_V1', 'MSMT17_V2' or 'msmt17'")
    for name in lists:
        if not os.path.isfile(os.path.join(base, name)):
            raise DatasetError(f"{os.path.join(base, name)}: MSMT17 list file is missing")
    image_dirs = None
    for train_dir, test_dir in (("train", "test"), ("mask_train_v2", "mask_test_v2")):
        if os.path.isdir(os.path.join(base, train_dir)) and os.path.isdir(os.path.join(base, test_dir)):
            image_dirs = (os.path.join(base, train_dir), os.path.join(base, test_dir))
            break
    if image_dirs is None:
        raise DatasetError(f"{base}: MSMT17 image folders missing; expected 'train/' and 'test/' (V1) "
                           "or 'mask_train_v2/' and 'mask_test_v2/' (V2)")
    train_dir, test_dir = image_dirs
    splits = {
        "train": _msmt_samples(os.path.join(base, "list_train.txt"), train_dir, "train")
        + _msmt_samples(os.path.join(base, "list_val.txt"), train_dir, "train"),
        "query": _msmt_samples(os.path.join(base, "list_query.txt"), test_dir, "query"),
        "gallery": _msmt_samples(os.path.join(base, "list_gallery.txt"), test_dir, "gallery"),
    }
    return _make_data("msmt17", base, splits,
                      notes=("train = list_train.txt + list_val.txt (validation ids are training ids)",))


# --------------------------------------------------------------------------- VeRi-776


def load_veri776(root: str) -> ReidData:
    """VeRi-776 (Liu et al., ECCV 2016 / ICME 2016), 20 cameras.

    Layout: ``root/{image_train, image_query, image_test}/VVVV_cCCC_FFFFFFFF_K.jpg``, or
    ``root`` a parent holding ``VeRi/``, ``VeRi-776/`` or ``veri776/``. When
    ``name_train.txt`` / ``name_query.txt`` / ``name_test.txt`` exist in ``root`` they
    choose the files of that split (one file name a line); otherwise the folder is listed.
    """
    root = _abs_root(root)
    base = _find_root(root, ("image_train", "image_query", "image_test"), ("VeRi", "VeRi-776", "veri776"))
    notes: list[str] = []
    folders = _split_folders(base, {"train": "image_train", "query": "image_query", "gallery": "image_test"}, notes)
    list_files = {"train": "name_train.txt", "query": "name_query.txt", "gallery": "name_test.txt"}
    splits: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for split, folder in folders.items():
        if folder is None:
            continue
        list_path = os.path.join(base, list_files[split])
        if os.path.isfile(list_path):
            entries = []
            for lineno, fields in _read_lines(list_path):
                if len(fields) != 1:
                    raise DatasetError(f"{list_path}:{lineno}: expected one file name a line, "
                                       f"got {' '.join(fields)!r}")
                entries.append((os.path.join(folder, fields[0]), f"{list_path}:{lineno}: {fields[0]}"))
        else:
            entries = [(p, p) for p in _list_images(folder)]
        for path, where in entries:
            m = _VERI_RE.match(os.path.basename(path))
            if m is None:
                raise DatasetError(f"{where}: file name does not match the VeRi-776 pattern {_VERI_PATTERN}")
            cam = int(m.group(2))
            if cam < 1:
                raise DatasetError(f"{where}: camera c{cam:03d} is invalid; VeRi-776 cameras are numbered from 1")
            splits[split].append(Sample(path, int(m.group(1)), cam - 1, split, cam))
    return _make_data("veri776", base, splits, notes=notes)


# --------------------------------------------------------------------------- VehicleID


def _vehicleid_samples(list_path: str, image_dir: str, splits: tuple[str, ...]) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {s: [] for s in splits}
    for lineno, fields in _read_lines(list_path):
        where = f"{list_path}:{lineno}"
        if len(fields) != 2:
            raise DatasetError(f"{where}: expected '<image name without extension> <vehicle id>', "
                               f"got {' '.join(fields)!r}")
        path = os.path.join(image_dir, fields[0] + ".jpg")
        pid = _parse_pid(fields[1], where)
        for split in splits:
            out[split].append(Sample(path, pid, 0, split, -1))  # no cameras
    return out


def load_vehicleid(root: str, test_size: str = "small") -> ReidData:
    """PKU VehicleID (Liu et al., CVPR 2016). No cameras: every camid is 0.

    Layout: ``root/image/*.jpg`` and ``root/train_test_split/{train_list.txt,
    test_list_800.txt, test_list_1600.txt, test_list_2400.txt}`` with lines
    ``<image name without extension> <vehicle id>``; or ``root`` a parent holding
    ``VehicleID_V1.0/`` or ``vehicleid/``.

    Args:
        root: dataset folder.
        test_size: ``small`` (800 ids), ``medium`` (1600) or ``large`` (2400).

    Returns:
        ``protocol="vehicleid"``: query and gallery are both the whole test list; the
        metrics sample one gallery image per identity and repeat.
    """
    root = _abs_root(root)
    if test_size not in VEHICLEID_TEST_SIZES:
        raise DatasetError(f"vehicleid test size must be one of {list(VEHICLEID_TEST_SIZES)}, got {test_size!r}")
    base = _find_root(root, ("image", "train_test_split"), ("VehicleID_V1.0", "vehicleid"))
    image_dir = os.path.join(base, "image")
    if not os.path.isdir(image_dir):
        raise DatasetError(f"{image_dir}: VehicleID image folder is missing")
    split_dir = os.path.join(base, "train_test_split")
    train_list = os.path.join(split_dir, "train_list.txt")
    test_list = os.path.join(split_dir, f"test_list_{VEHICLEID_TEST_SIZES[test_size]}.txt")
    for path in (train_list, test_list):
        if not os.path.isfile(path):
            raise DatasetError(f"{path}: VehicleID list file is missing")
    splits = {**_vehicleid_samples(train_list, image_dir, ("train",)),
              **_vehicleid_samples(test_list, image_dir, ("query", "gallery"))}
    notes = (f"test list {os.path.basename(test_list)} ({test_size}); query = gallery = the whole test list, "
             "evaluated with one random gallery image per vehicle",)
    return _make_data("vehicleid", base, splits, protocol="vehicleid", notes=notes)


# --------------------------------------------------------------------------- folder layout


def _compile_camera_regex(camera_regex: str) -> re.Pattern[str]:
    try:
        pattern = re.compile(camera_regex)
    except re.error as e:
        raise DatasetError(f"camera regex '{camera_regex}' is not a valid regular expression: {e}") from None
    if pattern.groups < 1:
        raise DatasetError(f"camera regex '{camera_regex}' needs a capturing group: group 1 is the camera number")
    return pattern


def load_folder(root: str, camera_regex: str = DEFAULT_CAMERA_REGEX) -> ReidData:
    """Your own images: ``root/<split>/<identity>/<image>``.

    Split folders are ``train`` (optional), ``query`` and ``gallery``. Identity folder
    names are any strings: all-digit names keep their number, the others get numbers
    after the largest numeric one, in sorted order, identically in every split.
    The camera is read from the image FILE NAME: ``camera_regex`` is searched in it
    and group 1 must be an integer; the distinct cameras, sorted, become camids 0, 1, 2 ...
    while each sample's ``camera`` keeps the number of its file name for display.

    Args:
        root: dataset folder.
        camera_regex: regular expression with a capturing group for the camera,
            e.g. ``c(\\d+)`` for ``0001_c3_0042.jpg``.
    """
    root = _abs_root(root)
    pattern = _compile_camera_regex(camera_regex)
    present = [s for s in SPLITS if os.path.isdir(os.path.join(root, s))]
    if not present:
        raise DatasetError(f"{root}: no split folders found; expected {list(SPLITS)} "
                           "(train optional) in the layout <root>/<split>/<identity>/<image>")
    notes = [f"{s}: folder {os.path.join(root, s)} does not exist, split is empty"
             for s in SPLITS if s not in present]
    raw: list[tuple[str, str, int, str]] = []  # (path, identity folder, camera number, split)
    for split in present:
        split_dir = os.path.join(root, split)
        with os.scandir(split_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                if _is_image(entry.name):
                    raise DatasetError(f"{entry.path}: image directly in the split folder; the folder layout is "
                                       f"<root>/<split>/<identity>/<image>")
                continue
            with os.scandir(entry.path) as it2:
                files = sorted(it2, key=lambda e: e.name)
            for f in files:
                if f.is_dir() and not f.name.startswith("."):
                    raise DatasetError(f"{f.path}: unexpected subfolder; the folder layout is "
                                       f"<root>/<split>/<identity>/<image>")
                if not _is_image(f.name):
                    continue
                m = pattern.search(f.name)
                if m is None or m.group(1) is None:
                    raise DatasetError(f"{f.path}: file name {f.name!r} does not match camera regex "
                                       f"'{camera_regex}' (group 1 must be the camera number)")
                try:
                    cam = int(m.group(1))
                except ValueError:
                    raise DatasetError(f"{f.path}: camera regex '{camera_regex}' group 1 matched "
                                       f"{m.group(1)!r}, which is not an integer") from None
                raw.append((f.path, entry.name, cam, split))
    names = sorted({r[1] for r in raw})
    numeric = {n: int(n) for n in names if n.isdigit() and n.isascii()}
    by_number: dict[int, str] = {}
    for n, value in numeric.items():
        if value in by_number:
            raise DatasetError(f"{root}: identity folders {by_number[value]!r} and {n!r} both mean identity {value}")
        by_number[value] = n
    next_pid = max(numeric.values(), default=0) + 1
    pid_of = dict(numeric)
    named = [n for n in names if n not in numeric]
    for i, n in enumerate(named):
        pid_of[n] = next_pid + i
    if named:
        notes.append(f"{len(named)} non-numeric identity folders numbered {next_pid}..{next_pid + len(named) - 1} "
                     f"in sorted order (first: {named[0]!r} -> {next_pid})")
    cameras = sorted({r[2] for r in raw})
    cam_of = {c: i for i, c in enumerate(cameras)}
    if cameras:
        notes.append("cameras " + ", ".join(f"{c}->{i}" for c, i in cam_of.items()) + f" (regex '{camera_regex}')")
    splits: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for path, ident, cam, split in raw:
        splits[split].append(Sample(os.path.abspath(path), pid_of[ident], cam_of[cam], split, cam))
    return _make_data("folder", root, splits, notes=notes)


# --------------------------------------------------------------------------- CSV manifest

MANIFEST_COLUMNS = ("path", "pid", "camid", "split")


def _rows(reader: Any, root: str) -> Iterator[list[str]]:
    """The rows of a ``csv.reader``; a row the csv module refuses (a field over its size limit) is a DatasetError."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DatasetError(f"{root}:{reader.line_num}: not a valid CSV row: {e}") from None
        yield row


def load_manifest(root: str) -> ReidData:
    """A CSV manifest with header ``path,pid,camid,split``.

    ``path`` is absolute or relative to the CSV's folder; ``pid`` an integer;
    ``camid`` a 0-based integer camera (shown as written: the camera a person reads is the
    CSV's number); ``split`` one of train/query/gallery.

    Args:
        root: the CSV file.
    """
    root = _abs_root(root)
    if not os.path.isfile(root):
        raise DatasetError(f"{root}: manifest must be a CSV file with header {','.join(MANIFEST_COLUMNS)}")
    folder = os.path.dirname(root)
    splits: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    try:
        with open(root, "rb") as fb:
            raw = fb.read()
    except OSError as e:
        raise DatasetError(f"{root}: cannot read the manifest: {e.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")  # Excel writes "CSV UTF-8" with a byte-order mark
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DatasetError(f"{root}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {column}); "
                           "save the manifest as UTF-8 CSV") from None
    with io.StringIO(text, newline="") as f:
        reader = csv.reader(f)
        header = next(_rows(reader, root), None)
        if header is None or [h.strip() for h in header] != list(MANIFEST_COLUMNS):
            raise DatasetError(f"{root}:1: header must be {','.join(MANIFEST_COLUMNS)}, got "
                               f"{','.join(header) if header else 'an empty file'!r}")
        for row in _rows(reader, root):
            where = f"{root}:{reader.line_num}"
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(MANIFEST_COLUMNS):
                raise DatasetError(f"{where}: expected {len(MANIFEST_COLUMNS)} columns "
                                   f"{','.join(MANIFEST_COLUMNS)}, got {len(row)}: {row!r}")
            path, pid_text, cam_text, split = (c.strip() for c in row)
            if not path:
                raise DatasetError(f"{where}: path is empty")
            try:
                pid = int(pid_text)
            except ValueError:
                raise DatasetError(f"{where}: pid must be an integer, got {pid_text[:40]!r}") from None
            if not -1 <= pid <= ID_MAX:
                raise DatasetError(f"{where}: pid must be in [-1, {ID_MAX}], got {pid_text[:40]}")
            try:
                camid = int(cam_text)
            except ValueError:
                raise DatasetError(f"{where}: camid must be an integer, got {cam_text!r}") from None
            if not 0 <= camid <= ID_MAX:
                raise DatasetError(f"{where}: camid must be in [0, {ID_MAX}] (0-based), got {cam_text[:40]}")
            if split not in SPLITS:
                raise DatasetError(f"{where}: split must be one of {list(SPLITS)}, got {split!r}")
            if not _is_image(path):
                raise DatasetError(f"{where}: path {path!r} is not an image; extensions {list(IMAGE_EXTS)}")
            full = os.path.normpath(path if os.path.isabs(path) else os.path.join(folder, path))
            splits[split].append(Sample(full, pid, camid, split, camid))  # shown as written
    return _make_data("manifest", root, splits)


# --------------------------------------------------------------------------- display camera

_CAMERA_IS_CAMID_PLUS_ONE = ("market1501", "demo", "dukemtmcreid", "msmt17", "veri776")


def display_camera(dataset: str, camid: int, file_name: str, camera_regex: str = DEFAULT_CAMERA_REGEX) -> int:
    """The ``Sample.camera`` that ``dataset``'s loader gives an image, from a record that kept
    only its 0-based ``camid`` and file name (e.g. probes written before ``camera`` was stored).

    Named layouts read the camera from the file name and store camid = camera - 1; ``folder``
    renumbers the cameras it finds, so the number is read back from ``file_name`` with
    ``camera_regex``; a manifest's camid is shown as written; VehicleID has none (-1).

    Raises:
        DatasetError: unknown dataset, or a folder file name the regex does not match.
    """
    if dataset in _CAMERA_IS_CAMID_PLUS_ONE:
        return camid + 1
    if dataset == "manifest":
        return camid
    if dataset == "vehicleid":
        return -1
    if dataset == "folder":
        m = _compile_camera_regex(camera_regex).search(os.path.basename(file_name))
        if m is None or m.group(1) is None or not m.group(1).isdigit():
            raise DatasetError(f"{file_name}: file name does not match camera regex '{camera_regex}'")
        return int(m.group(1))
    raise DatasetError(f"unknown dataset {dataset!r}; valid names: {sorted(DATASETS)}")


# --------------------------------------------------------------------------- registry

DATASETS: dict[str, Callable[..., ReidData]] = {
    "market1501": load_market1501,
    "demo": load_demo,
    "dukemtmcreid": load_dukemtmcreid,
    "msmt17": load_msmt17,
    "veri776": load_veri776,
    "vehicleid": load_vehicleid,
    "folder": load_folder,
    "manifest": load_manifest,
}


def load_dataset(name: str, root: str, *, camera_regex: str = DEFAULT_CAMERA_REGEX,
                 vehicleid_test_size: str = "small") -> ReidData:
    """Load dataset ``name`` from ``root``.

    Args:
        name: a key of ``DATASETS``.
        root: dataset folder (the CSV file for ``manifest``).
        camera_regex: camera regex for the ``folder`` layout; other datasets reject
            a non-default value rather than ignore it.
        vehicleid_test_size: ``small``/``medium``/``large`` for ``vehicleid``; other
            datasets reject a non-default value.

    Raises:
        DatasetError: unknown name, missing root, or a file breaking the layout.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {sorted(DATASETS)}")
    if not root:
        raise DatasetError(f"dataset {name!r} needs a root path, got {root!r}")
    if not os.path.exists(root):
        raise DatasetError(f"{root}: dataset root does not exist")
    if name != "folder" and camera_regex != DEFAULT_CAMERA_REGEX:
        raise DatasetError(f"camera_regex applies only to the 'folder' dataset, got '{camera_regex}' for {name!r}")
    if name != "vehicleid" and vehicleid_test_size != "small":
        raise DatasetError(f"vehicleid_test_size applies only to 'vehicleid', got {vehicleid_test_size!r} "
                           f"for {name!r}")
    root = os.path.abspath(root)
    if name == "folder":
        return load_folder(root, camera_regex)
    if name == "vehicleid":
        return load_vehicleid(root, vehicleid_test_size)
    return DATASETS[name](root)
