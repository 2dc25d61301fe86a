"""esnet.data.images: every refusal names the file and the rule; every mode becomes 8-bit RGB."""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from esnet.data.images import ALPHA_BACKGROUND, MAX_PIXELS, ImageError, load_rgb, load_rgb_bytes


def _refused(path, *words: str) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_rgb(path)
    err = info.value
    name = os.fsdecode(path)
    assert err.path == name
    assert repr(name) in str(err)
    for w in words:
        assert w in err.reason, (w, err.reason)
        assert w in str(err)
    return err


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming width x height, a tiny IDAT, IEND."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


# --- accepted inputs -------------------------------------------------------------


def test_rgb_jpeg_loads_as_rgb(tmp_path):
    p = tmp_path / "a.jpg"
    Image.new("RGB", (40, 60), (200, 10, 10)).save(p, quality=95)
    im = load_rgb(p)
    assert im.mode == "RGB" and im.size == (40, 60)
    r, g, b = im.getpixel((20, 30))
    assert abs(r - 200) <= 3 and abs(g - 10) <= 3 and abs(b - 10) <= 3


def test_cmyk_jpeg_converted(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(p, quality=100)  # pure red in CMYK
    im = load_rgb(str(p))
    assert im.mode == "RGB" and im.size == (8, 8)
    r, g, b = im.getpixel((4, 4))
    assert r >= 250 and g <= 5 and b <= 5


def test_16bit_png_scaled_not_clipped(tmp_path):
    p = tmp_path / "g16.png"
    a = np.array([[0, 257, 32896, 65535]] * 2, dtype=np.uint16)  # (2, 4)
    Image.fromarray(a).save(p)
    with Image.open(p) as raw:
        assert raw.mode.startswith("I")
    im = load_rgb(p)
    assert im.mode == "RGB"
    got = np.asarray(im)[0, :, 0].tolist()
    # v * 255 / 65535 rounded: 0, 1, 128, 255 (clipping would give 0, 255, 255, 255)
    assert got == [0, 1, 128, 255]
    assert np.array_equal(np.asarray(im)[..., 0], np.asarray(im)[..., 2])


def test_mode_I_scaled_like_16bit(tmp_path):
    p = tmp_path / "i32.tif"
    Image.fromarray(np.array([[0, 65535], [514, 70000]], dtype=np.int32)).save(p)
    im = load_rgb(p)
    assert np.asarray(im)[..., 0].tolist() == [[0, 255], [2, 255]]


def test_palette_with_transparency_composited_on_grey(tmp_path):
    p = tmp_path / "pal.png"
    im = Image.new("P", (4, 4), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))  # 0 = red, 1 = blue
    im.putpixel((0, 0), 1)
    im.info["transparency"] = 0  # red is see-through
    im.save(p, transparency=0)
    out = load_rgb(p)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (0, 0, 255)
    assert out.getpixel((3, 3)) == ALPHA_BACKGROUND


def test_rgba_half_alpha_blended(tmp_path):
    p = tmp_path / "rgba.png"
    im = Image.new("RGBA", (4, 4), (255, 255, 255, 0))
    im.putpixel((1, 1), (0, 0, 0, 255))
    im.putpixel((2, 2), (255, 0, 0, 128))
    im.save(p)
    out = load_rgb(p)
    assert out.getpixel((0, 0)) == ALPHA_BACKGROUND  # alpha 0: background only
    assert out.getpixel((1, 1)) == (0, 0, 0)  # alpha 255: the pixel only
    r, g, b = out.getpixel((2, 2))  # 128/255 red over grey 128: 128 + (255-128)*0.502 = 191.75
    assert abs(r - 192) <= 1 and abs(g - 64) <= 1 and abs(b - 64) <= 1


def test_la_and_grayscale(tmp_path):
    pl = tmp_path / "l.png"
    Image.new("L", (5, 3), 77).save(pl)
    out = load_rgb(pl)
    assert out.mode == "RGB" and out.size == (5, 3) and out.getpixel((0, 0)) == (77, 77, 77)
    pla = tmp_path / "la.png"
    Image.new("LA", (5, 3), (10, 0)).save(pla)
    assert load_rgb(pla).getpixel((2, 2)) == ALPHA_BACKGROUND


def test_exif_orientation_6_swaps_width_and_height(tmp_path):
    p = tmp_path / "rot.jpg"
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 10, 20))  # white band at the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(p, exif=exif, quality=95)
    out = load_rgb(p)
    assert out.size == (20, 40)
    # Rotating clockwise moves the left band to the top.
    assert out.getpixel((10, 2))[0] > 200 and out.getpixel((10, 37))[0] < 50


def test_non_utf8_file_name(tmp_path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9_\xff.png"
    try:
        with open(raw, "wb") as f:
            Image.new("RGB", (4, 4), (1, 2, 3)).save(f, format="PNG")
    except (OSError, UnicodeError) as e:
        pytest.skip(f"file system refuses non-UTF-8 names: {e}")
    assert load_rgb(raw).getpixel((0, 0)) == (1, 2, 3)
    assert load_rgb(os.fsdecode(raw)).getpixel((0, 0)) == (1, 2, 3)
    os.remove(raw)
    err = _refused(raw, "does not exist")
    str(err).encode("utf-8")  # the message is printable: repr() escapes the undecodable bytes


def test_load_rgb_bytes_same_rules(tmp_path):
    p = tmp_path / "x.png"
    Image.new("RGB", (3, 3), (9, 8, 7)).save(p)
    assert load_rgb_bytes(p.read_bytes(), "upload.png").getpixel((1, 1)) == (9, 8, 7)
    with pytest.raises(ImageError, match=r"cannot use image 'upload\.jpg': file is empty"):
        load_rgb_bytes(b"", "upload.jpg")
    with pytest.raises(ImageError, match="not an image") as info:
        load_rgb_bytes(b"hello world", "notes.jpg")
    assert info.value.path == "notes.jpg"


# --- refusals ----------------------------------------------------------------------


def test_missing_file(tmp_path):
    _refused(tmp_path / "nope.jpg", "does not exist")


def test_directory_named_like_an_image(tmp_path):
    d = tmp_path / "x.jpg"
    d.mkdir()
    _refused(d, "is a directory")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    _refused(p, "empty (0 bytes)")


def test_text_file_named_jpg(tmp_path):
    p = tmp_path / "readme.jpg"
    p.write_text("this is not a picture\n")
    _refused(p, "not an image")


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_jpeg(tmp_path, keep):
    full = tmp_path / "full.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(full, quality=90)
    data = full.read_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: int(len(data) * keep)])
    _refused(p, "truncated or corrupt")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_unsupported_format(tmp_path):
    p = tmp_path / "x.pcx"
    Image.new("RGB", (4, 4)).save(p)
    _refused(p, "unsupported format 'PCX'")


def test_unsupported_pixel_mode(tmp_path):
    p = tmp_path / "f.tif"
    Image.fromarray(np.zeros((4, 4), dtype=np.float32)).save(p)
    _refused(p, "unsupported pixel mode 'F'")


def test_one_by_one_too_small(tmp_path):
    p = tmp_path / "dot.png"
    Image.new("RGB", (1, 1)).save(p)
    _refused(p, "1x1 is too small", "at least 2 pixels")


def test_one_by_ten_thousand_refused(tmp_path):
    p = tmp_path / "strip.png"
    Image.new("L", (1, 10000)).save(p)
    _refused(p, "1x10000")


def test_extreme_aspect_ratio(tmp_path):
    p = tmp_path / "wide.png"
    Image.new("L", (210, 10)).save(p)  # 21:1
    _refused(p, "aspect ratio 21.0:1", "at most 20x")
    ok = tmp_path / "ok.png"
    Image.new("L", (200, 10)).save(ok)  # exactly 20:1 is allowed
    assert load_rgb(ok).size == (200, 10)


def test_bomb_20000_squared_refused_from_header(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header_only(20000, 20000))
    assert p.stat().st_size < 200
    err = _refused(p, "decompression-bomb guard")
    assert str(MAX_PIXELS) in err.reason


def test_bomb_above_our_limit_below_pil_limit(tmp_path):
    p = tmp_path / "big.png"
    p.write_bytes(_png_header_only(8000, 6000))  # 48 MP: over 40 MP, under PIL's 89 MP
    _refused(p, "8000x6000 = 48000000 pixels exceeds the limit of 40000000")


def test_bomb_warning_region_is_an_error(tmp_path):
    p = tmp_path / "warn.png"
    p.write_bytes(_png_header_only(10000, 10000))  # 100 MP: PIL warns (not errors) here
    _refused(p, "decompression-bomb guard")


def test_unreadable_file(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading")
    p = tmp_path / "secret.jpg"
    Image.new("RGB", (4, 4)).save(p)
    p.chmod(0)
    try:
        _refused(p, "permission denied")
    finally:
        p.chmod(0o644)


def test_error_is_valueerror_and_pickles():
    import pickle

    e = ImageError("/x/y.jpg", "file does not exist")
    assert isinstance(e, ValueError)
    assert str(e) == "cannot use image '/x/y.jpg': file does not exist"
    back = pickle.loads(pickle.dumps(e))
    assert (back.path, back.reason, str(back)) == (e.path, e.reason, str(e))


def test_path_object_and_str_give_same_pixels(tmp_path):
    p: Path = tmp_path / "s.png"
    Image.new("RGB", (3, 2), (5, 6, 7)).save(p)
    assert load_rgb(p).tobytes() == load_rgb(str(p)).tobytes()


def test_real_market1501_images_load_if_available():
    root = os.environ.get("ESNET_MARKET1501", "")
    if not root or not Path(root, "query").is_dir():
        pytest.skip("set ESNET_MARKET1501 to a Market-1501 root to run this check")
    files = sorted(Path(root, "query").glob("*.jpg"))[:20]
    assert files, f"no .jpg files in {root}/query"
    for f in files:
        im = load_rgb(f)
        assert im.mode == "RGB" and im.size == (64, 128), f
