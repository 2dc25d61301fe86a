"""Bad and odd images through both doors: ``load_rgb`` and ``embed_samples`` (which must skip, not stop).

Every case says what must happen: accepted (8-bit RGB of a stated size, with a pixel
check where the conversion matters) or refused (an ImageError whose message names the
file and contains the reason). test_images.py covers the conversion rules in detail;
here every kind also goes through a real embedding batch next to good images, and
load_rgb_bytes is fuzzed.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from esnet.data import images
from esnet.data.images import ALPHA_BACKGROUND, MAX_FILE_BYTES, ImageError, load_rgb, load_rgb_bytes
from esnet.data.types import Sample
from esnet.embedding import Embeddings, embed_samples, load_inference
from tests.synthetic import random_checkpoint

Check = Callable[[Image.Image], None]


# --- builders: each writes one file (or odd path) into d and returns its path -------------
def _save(d: Path, name: str, im: Image.Image, **kw) -> Path:
    p = d / name
    im.save(p, **kw)
    return p


def _write(d: Path, name: str, data: bytes) -> Path:
    p = d / name
    p.write_bytes(data)
    return p


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def _png(width: int, height: int, depth: int, colour: int, rows: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def _noise_png() -> bytes:
    arr = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _png_chunk_offset(data: bytes, kind: bytes) -> tuple[int, int]:
    """(offset of the chunk's length field, payload length) of the first ``kind`` chunk."""
    i = 8
    while i < len(data):
        n = struct.unpack(">I", data[i:i + 4])[0]
        if data[i + 4:i + 8] == kind:
            return i, n
        i += 12 + n
    raise AssertionError(f"no {kind!r} chunk")


def _jpeg(size=(40, 24), colour=(0, 160, 0), **kw) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def b_cmyk(d):
    return _save(d, "cmyk.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)), quality=100)  # pure red


def b_png16(d):
    return _save(d, "grey16.png", Image.fromarray(np.array([[0, 257, 32896, 65535]] * 2, dtype=np.uint16)))


def b_png48(d):
    a = (np.arange(4 * 4 * 3).reshape(4, 4, 3) * 1300).astype(">u2")  # (4, 4, 3) big-endian 16-bit
    return _write(d, "rgb48.png", _png(4, 4, 16, 2, b"".join(b"\x00" + a[r].tobytes() for r in range(4))))


def b_palette_transparent(d):
    im = Image.new("P", (4, 4), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))  # 0 = red (see-through), 1 = blue
    im.putpixel((0, 0), 1)
    return _save(d, "palette.png", im, transparency=0)


def b_rgba(d):
    im = Image.new("RGBA", (6, 4), (255, 255, 255, 0))
    im.putpixel((1, 1), (0, 0, 0, 255))
    return _save(d, "rgba.png", im)


def b_la(d):
    return _save(d, "la.png", Image.new("LA", (5, 3), (10, 0)))


def b_grey(d):
    return _save(d, "grey.png", Image.new("L", (5, 3), 77))


def b_one_bit(d):
    im = Image.new("1", (8, 4), 0)
    im.putpixel((2, 1), 1)
    return _save(d, "bilevel.png", im)


def b_exif_rotated(d):
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 10, 20))  # white band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: the band ends up at the top
    return _save(d, "rotated.jpg", im, exif=exif, quality=95)


def b_exif_invalid_orientation(d):
    exif = Image.Exif()
    exif[0x0112] = 9  # not a valid orientation (1..8): ignored
    return _write(d, "badexif.jpg", _jpeg(exif=exif))


def b_gif_multiframe(d):
    frames = [Image.new("P", (10, 6), i) for i in range(3)]
    for f in frames:
        f.putpalette([200, 0, 0, 0, 200, 0, 0, 0, 200] + [0] * (256 * 3 - 9))
    p = d / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    return p


def b_tiff(d):
    return _save(d, "photo.tif", Image.new("RGB", (12, 9), (10, 20, 30)))


def b_webp(d):
    return _save(d, "photo.webp", Image.new("RGB", (12, 9), (10, 20, 30)), lossless=True)


def b_bmp(d):
    return _save(d, "photo.bmp", Image.new("RGB", (12, 9), (10, 20, 30)))


def b_ppm(d):
    return _save(d, "photo.ppm", Image.new("RGB", (12, 9), (10, 20, 30)))


def b_jpeg_trailing(d):
    return _write(d, "trailing.jpg", _jpeg() + b"GARBAGE AFTER THE END OF IMAGE MARKER" * 10)


def b_idat_crc_only(d):
    data = bytearray(_noise_png())
    off, n = _png_chunk_offset(bytes(data), b"IDAT")
    data[off + 8 + n] ^= 0xFF  # the CRC only; the compressed pixels are intact
    return _write(d, "idatcrc.png", bytes(data))


def b_non_utf8(d):
    raw = os.fsencode(d) + b"/caf\xe9_\xff.png"
    with open(raw, "wb") as f:
        Image.new("RGB", (4, 4), (1, 2, 3)).save(f, format="PNG")
    return os.fsdecode(raw)


def b_truncated_jpeg(d):
    arr = np.random.default_rng(0).integers(0, 255, (64, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return _write(d, "cut.jpg", buf.getvalue()[: len(buf.getvalue()) // 2])


def b_zero_bytes(d):
    return _write(d, "empty.jpg", b"")


def b_text_jpg(d):
    return _write(d, "notes.jpg", b"this is a shopping list, not a picture\n")


def b_one_by_one(d):
    return _save(d, "dot.png", Image.new("RGB", (1, 1)))


def b_one_by_10000(d):
    return _save(d, "strip.png", Image.new("L", (1, 10000)))


def b_png_bomb(d):
    return _write(d, "bomb.png", _png(20000, 20000, 1, 0, b"\x00" * 16))  # < 100 bytes, claims 400 MP


def b_jpeg_sof_bomb(d):
    data = bytearray(_jpeg(size=(8, 8)))
    i = data.find(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", 65000, 65000)  # frame header: height, width
    return _write(d, "sofbomb.jpg", bytes(data))


def b_gif_bomb(d):
    screen = b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00"
    image = b",\x00\x00\x00\x00\x02\x00\x02\x00\x00\x02\x02D\x01\x00;"
    return _write(d, "bomb.gif", screen + image)


def b_heic(d):
    # An ISO-BMFF 'ftyp' box with brand heic, as an iPhone photo starts: no decoder is installed.
    return _write(d, "IMG_0001.heic.jpg", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))


def b_avif(d):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buf, format="AVIF")
    return _write(d, "photo.avif", buf.getvalue())


def b_directory(d):
    p = d / "folder.jpg"
    p.mkdir()
    return p


def b_unreadable(d):
    p = _save(d, "unreadable.jpg", Image.new("RGB", (4, 4)))
    if os.geteuid() != 0:
        p.chmod(0)  # as root this does not stop reading: _deny_unreadable simulates it instead
    return p


def b_bad_ihdr_crc(d):
    data = bytearray(_noise_png())
    off, n = _png_chunk_offset(bytes(data), b"IHDR")
    data[off + 8 + n] ^= 0xFF
    return _write(d, "ihdrcrc.png", bytes(data))


def b_idat_flip(d):
    data = bytearray(_noise_png())
    off, n = _png_chunk_offset(bytes(data), b"IDAT")
    data[off + 8 + n // 2] ^= 0x01  # one bit of the compressed pixels
    return _write(d, "idatflip.png", bytes(data))


def b_random_png(d):
    return _write(d, "random.png", np.random.default_rng(7).integers(0, 256, 2048, dtype=np.uint8).tobytes())


def b_truncated_gif_header(d):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="GIF")
    return _write(d, "cutheader.gif", buf.getvalue()[:10])


def b_fifo(d):
    p = d / "pipe.jpg"
    os.mkfifo(p)  # opening it for reading would wait for a writer forever
    return p


def b_dev_zero(d):
    p = d / "zeros.jpg"
    p.symlink_to("/dev/zero")  # reading it would never end
    return p


def b_dangling(d):
    p = d / "dangling.jpg"
    p.symlink_to(d / "gone.jpg")
    return p


def b_symlink_loop(d):
    a, b = d / "loop_a.jpg", d / "loop_b.jpg"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def b_oversize(d):
    p = d / "huge.bmp"
    with open(p, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk space, but stat says 256 MiB + 1
    return p


def b_non_utf8_bad(d):
    raw = os.fsencode(d) + b"/r\xe9sum\xe9.jpg"
    with open(raw, "wb") as f:
        f.write(b"%PDF-1.4 not an image")
    return os.fsdecode(raw)


def b_missing(d):
    return d / "deleted_after_listing.jpg"


# --- pixel checks of accepted cases ---------------------------------------------------------
def near(expected: tuple[int, int, int], xy: tuple[int, int] = (0, 0), tol: int = 3) -> Check:
    def check(im: Image.Image) -> None:
        got = im.getpixel(xy)
        assert all(abs(g - e) <= tol for g, e in zip(got, expected)), (xy, got, expected)

    return check


def grey16_scaled(im: Image.Image) -> None:
    assert np.asarray(im)[0, :, 0].tolist() == [0, 1, 128, 255]  # v * 255 / 65535, not clipped


def rgb48_top_byte(im: Image.Image) -> None:
    a = np.asarray(im).astype(int)
    expected = (np.arange(48).reshape(4, 4, 3) * 1300) >> 8  # (4, 4, 3) the high byte of each sample
    assert np.abs(a - expected).max() <= 1


def palette_alpha(im: Image.Image) -> None:
    assert im.getpixel((0, 0)) == (0, 0, 255) and im.getpixel((3, 3)) == ALPHA_BACKGROUND


def rgba_alpha(im: Image.Image) -> None:
    assert im.getpixel((1, 1)) == (0, 0, 0) and im.getpixel((0, 0)) == ALPHA_BACKGROUND


def bilevel(im: Image.Image) -> None:
    a = np.asarray(im)
    assert set(np.unique(a).tolist()) == {0, 255} and tuple(a[1, 2]) == (255, 255, 255)


def upright(im: Image.Image) -> None:
    # The stored left band must now be the top rows: white at the top, black at the bottom.
    assert im.getpixel((10, 2))[0] > 200 and im.getpixel((10, 37))[0] < 50


def idat_pixels_intact(im: Image.Image) -> None:
    expected = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(im), expected)


@dataclass(frozen=True)
class Case:
    """One kind of file: build it, then expect ``size`` (accepted) or ``reason`` words (refused)."""

    id: str
    label: str
    build: Callable[[Path], Path | str]
    size: tuple[int, int] | None = None
    check: Check | None = None
    reason: str = ""


CASES = [
    Case("cmyk", "CMYK JPEG", b_cmyk, (8, 8), near((255, 0, 0), (4, 4), 5)),
    Case("png16", "16-bit greyscale PNG", b_png16, (4, 2), grey16_scaled),
    Case("png48", "16-bit-per-channel RGB PNG", b_png48, (4, 4), rgb48_top_byte),
    Case("palette_alpha", "palette PNG with a transparent colour", b_palette_transparent, (4, 4), palette_alpha),
    Case("rgba", "RGBA PNG", b_rgba, (6, 4), rgba_alpha),
    Case("la", "greyscale + alpha (LA) PNG", b_la, (5, 3), near(ALPHA_BACKGROUND, (2, 2), 0)),
    Case("grey", "8-bit greyscale PNG", b_grey, (5, 3), near((77, 77, 77), (0, 0), 0)),
    Case("one_bit", "1-bit PNG", b_one_bit, (8, 4), bilevel),
    Case("exif_rotated", "JPEG with EXIF orientation 6 (rotate 90)", b_exif_rotated, (20, 40), upright),
    Case("exif_invalid", "JPEG with an invalid EXIF orientation (9)", b_exif_invalid_orientation, (40, 24),
         near((0, 160, 0), (20, 12), 6)),
    Case("gif_multiframe", "3-frame animated GIF (first frame used)", b_gif_multiframe, (10, 6),
         near((200, 0, 0), (5, 3), 0)),
    Case("tiff", "RGB TIFF", b_tiff, (12, 9), near((10, 20, 30), (6, 4), 0)),
    Case("webp", "lossless WEBP", b_webp, (12, 9), near((10, 20, 30), (6, 4), 0)),
    Case("bmp", "BMP", b_bmp, (12, 9), near((10, 20, 30), (6, 4), 0)),
    Case("ppm", "PPM", b_ppm, (12, 9), near((10, 20, 30), (6, 4), 0)),
    Case("jpeg_trailing", "JPEG with garbage after the end marker", b_jpeg_trailing, (40, 24),
         near((0, 160, 0), (20, 12), 6)),
    Case("idat_crc_only", "PNG whose IDAT CRC is wrong but data intact", b_idat_crc_only, (16, 16),
         idat_pixels_intact),
    Case("non_utf8_name", "PNG with a non-UTF-8 file name", b_non_utf8, (4, 4), near((1, 2, 3), (0, 0), 0)),
    Case("truncated_jpeg", "JPEG cut at half its length", b_truncated_jpeg, reason="truncated or corrupt JPEG data"),
    Case("zero_bytes", "0-byte .jpg", b_zero_bytes, reason="file is empty (0 bytes)"),
    Case("text_jpg", "text file named .jpg", b_text_jpg, reason="not an image: no known image format"),
    Case("one_by_one", "1x1 PNG", b_one_by_one, reason="1x1 is too small"),
    Case("one_by_10000", "1x10000 PNG", b_one_by_10000, reason="1x10000 is too small"),
    Case("png_bomb", "PNG header claiming 20000x20000 (decompression bomb)", b_png_bomb,
         reason="decompression-bomb guard"),
    Case("jpeg_bomb", "JPEG frame header claiming 65000x65000", b_jpeg_sof_bomb, reason="decompression-bomb guard"),
    Case("gif_bomb", "GIF screen claiming 65535x65535", b_gif_bomb, reason="decompression-bomb guard"),
    Case("heic", "HEIC (iPhone) bytes named .jpg", b_heic,
         reason="unsupported format: an ISO-BMFF file of brand 'heic'"),
    Case("avif", "AVIF (decodable by PIL, not an accepted format)", b_avif, reason="unsupported format 'AVIF'"),
    Case("directory", "directory named folder.jpg", b_directory, reason="is a directory"),
    Case("unreadable", "file without read permission", b_unreadable, reason="permission denied"),
    Case("ihdr_crc", "PNG with a corrupt IHDR CRC", b_bad_ihdr_crc, reason="corrupt or truncated PNG header"),
    Case("idat_flip", "PNG with one flipped bit in the pixel data", b_idat_flip,
         reason="truncated or corrupt PNG data"),
    Case("random_png", "2 KiB of random bytes named .png", b_random_png, reason="not an image"),
    Case("gif_header_cut", "GIF cut inside its header", b_truncated_gif_header,
         reason="corrupt or truncated GIF header"),
    Case("fifo", "named pipe (FIFO) called pipe.jpg", b_fifo, reason="not a regular file (a FIFO / named pipe)"),
    Case("dev_zero", "symlink to /dev/zero named .jpg", b_dev_zero, reason="not a regular file (a character device)"),
    Case("dangling", "dangling symlink", b_dangling, reason="file does not exist"),
    Case("symlink_loop", "symlink loop", b_symlink_loop, reason="Too many levels of symbolic links"),
    Case("oversize", "file of MAX_FILE_BYTES + 1 bytes", b_oversize, reason=f"at most {MAX_FILE_BYTES} bytes"),
    Case("non_utf8_bad", "non-UTF-8 name, not an image", b_non_utf8_bad, reason="not an image"),
    Case("missing", "file deleted after the list was made", b_missing, reason="file does not exist"),
]
IDS = [c.id for c in CASES]
assert len(set(IDS)) == len(IDS)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad_images")
    return {c.id: os.fsdecode(c.build(d)) for c in CASES}


@contextlib.contextmanager
def _no_hang(seconds: float = 60.0):
    """Fail instead of hanging forever if a FIFO is ever opened for reading again (SIGALRM, main thread)."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"load_rgb blocked for more than {seconds:g} s (opened a FIFO or device?)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Deny:
    """Makes opening ``unreadable.jpg`` fail with EACCES when root's reads cannot be stopped by chmod."""

    def __init__(self) -> None:
        self.real = os.open

    def __call__(self, path, flags, *args, **kwargs):
        if os.fsdecode(path).endswith("/unreadable.jpg"):
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return self.real(path, flags, *args, **kwargs)


def _deny_unreadable(mp: pytest.MonkeyPatch) -> None:
    if os.geteuid() == 0:
        mp.setattr(images.os, "open", _Deny())


def _describe(im: Image.Image) -> str:
    return f"accepted: {im.mode} {im.size[0]}x{im.size[1]}"


# --- door 1: load_rgb -----------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_load_rgb(case: Case, built: dict[str, str], monkeypatch: pytest.MonkeyPatch, record) -> None:
    """Each kind through load_rgb: the stated outcome, nothing else."""
    path = built[case.id]
    arg = os.fsencode(path) if case.id.startswith("non_utf8") else path  # undecodable names as bytes paths
    _deny_unreadable(monkeypatch)
    if case.size is not None:
        with _no_hang():
            im = load_rgb(arg)
        assert (im.mode, im.size) == ("RGB", case.size)
        assert np.asarray(im).dtype == np.uint8
        if case.check is not None:
            case.check(im)
        record(case.label, "load_rgb", _describe(im))
        return
    with pytest.raises(ImageError) as info, _no_hang():
        load_rgb(arg)
    err = info.value
    assert err.path == path and repr(path) in str(err), str(err)
    assert case.reason in err.reason, (case.reason, err.reason)
    str(err).encode("utf-8")  # printable even for a non-UTF-8 name (repr escapes it)
    record(case.label, "load_rgb", "refused (ImageError)", str(err))


# --- door 2: embed_samples, all kinds in one batch next to good images ---------------------
@pytest.fixture(scope="module")
def embedded(built: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Embeddings, list[str]]:
    d = tmp_path_factory.mktemp("embed")
    inf = load_inference(random_checkpoint(d / "m.pt"), device="cpu")
    rng = np.random.default_rng(5)
    good = []
    for i in range(2):
        p = d / f"{i + 1:04d}_c1s1_000001_00.jpg"
        Image.fromarray(rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)).save(p)
        good.append(str(p))
    paths = [good[0], *(built[c.id] for c in CASES), good[1]]
    with pytest.MonkeyPatch.context() as mp, _no_hang():
        _deny_unreadable(mp)
        emb = embed_samples(inf, [Sample(p, i, 0, "gallery") for i, p in enumerate(paths)], batch_size=16)
    return emb, good


def test_embed_batch_completes(embedded, record) -> None:
    """A batch mixing every kind with good images finishes; every file is either embedded or skipped."""
    emb, good = embedded
    n_ok = sum(c.size is not None for c in CASES)
    assert len(emb.paths) == n_ok + 2 and len(emb.skipped) == len(CASES) - n_ok
    assert emb.paths[0] == good[0] and emb.paths[-1] == good[1]
    feats = np.asarray(emb.features)
    assert feats.shape == (n_ok + 2, feats.shape[1]) and np.isfinite(feats).all()
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    record(f"{len(CASES)} kinds + 2 good images in one job", "embed_samples",
           f"finished: {len(emb.paths)} embedded, {len(emb.skipped)} skipped with reasons")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_embed_samples(case: Case, built: dict[str, str], embedded, record) -> None:
    """Each kind inside an embedding job: embedded when accepted, else in ``skipped`` with load_rgb's reason."""
    emb, _ = embedded
    path = built[case.id]
    skipped = dict(emb.skipped)
    if case.size is not None:
        assert path in emb.paths and path not in skipped
        record(case.label, "embed_samples", "embedded")
        return
    assert path not in emb.paths
    assert case.reason in skipped[path], (case.reason, skipped[path])
    record(case.label, "embed_samples", "skipped, job continued", f"{os.path.basename(path)}: {skipped[path]}")


# --- fuzzing load_rgb_bytes -------------------------------------------------------------------
def _seed_files() -> list[bytes]:
    rng = np.random.default_rng(11)
    out = []
    for fmt, mode in (("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("GIF", "P"), ("BMP", "RGB"),
                      ("TIFF", "RGB"), ("WEBP", "RGB"), ("PNG", "I;16")):
        if mode == "I;16":
            im = Image.fromarray(rng.integers(0, 65535, (12, 10), dtype=np.uint16))
        else:
            im = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).convert(mode)
        buf = io.BytesIO()
        kw = {}
        if fmt == "JPEG":
            exif = Image.Exif()
            exif[0x0112] = 6
            kw["exif"] = exif
        im.save(buf, format=fmt, **kw)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_files()
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _only_rgb_or_image_error(data: bytes) -> None:
    try:
        im = load_rgb_bytes(data, "fuzz.bin")
    except ImageError as e:
        assert e.path == "fuzz.bin" and e.reason
        return
    assert im.mode == "RGB" and min(im.size) >= images.MIN_SIDE


@pytest.mark.reliability_row(case="150 random byte strings (hypothesis)", door="load_rgb_bytes",
                             outcome="only RGB images or ImageError")
@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    """150 random byte strings (hypothesis): load_rgb_bytes gives an RGB image or ImageError, nothing else."""
    _only_rgb_or_image_error(data)


@pytest.mark.reliability_row(case=f"150 mutated JPEG/PNG/GIF/BMP/TIFF/WEBP files ({len(SEEDS)} seeds; bytes set, "
                             "cut or inserted)", door="load_rgb_bytes", outcome="only RGB images or ImageError")
@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about the corrupt EXIF it skips
@FUZZ
@given(st.sampled_from(range(len(SEEDS))),
       st.lists(st.tuples(st.sampled_from(["set", "cut", "insert"]), st.integers(0, 10_000), st.binary(min_size=1,
                                                                                                   max_size=8)),
                min_size=1, max_size=6))
def test_fuzz_mutated_images(seed: int, edits: list[tuple[str, int, bytes]]) -> None:
    """150 JPEG/PNG/GIF/BMP/TIFF/WEBP files with bytes set, cut or inserted: an RGB image or ImageError only."""
    data = bytearray(SEEDS[seed])
    for op, pos, chunk in edits:
        pos %= len(data) + 1
        if op == "set" and pos < len(data):
            data[pos] = chunk[0]
        elif op == "cut":
            data = data[:pos]
        else:
            data[pos:pos] = chunk
    _only_rgb_or_image_error(bytes(data))
