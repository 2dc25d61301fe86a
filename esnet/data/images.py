"""The one door every image comes through: decode, validate, orient, convert to 8-bit RGB.

Training, evaluation, the CLI and dashboard uploads all call :func:`load_rgb` or
:func:`load_rgb_bytes`, so every rule about what counts as a usable image lives here:

* the file must exist, be a regular readable file (not a FIFO, device or socket, which
  could block or never end) of at most :data:`MAX_FILE_BYTES`, and be non-empty;
* it must decode as one of :data:`FORMATS` and decode completely: a truncated or
  corrupt file is refused (PIL's global ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never
  touched by this module);
* the header may claim at most :data:`MAX_PIXELS` pixels, checked *before* the pixel
  data is decoded, so a small file that would expand to gigabytes (a decompression
  bomb) is refused cheaply; PIL's own ``DecompressionBombWarning``/``Error`` count as
  refusals too;
* both sides must be at least :data:`MIN_SIDE` pixels and the long side at most
  :data:`MAX_ASPECT` times the short side;
* EXIF orientation is applied (a phone photo tagged "rotate 90" comes out upright);
* every pixel mode becomes 8-bit RGB: 16-bit greyscale is scaled by 255/65535 (not
  clipped), transparency is composited onto :data:`ALPHA_BACKGROUND` (mid grey).
"""
from __future__ import annotations

import io
import os
import stat
import struct
import warnings
import zlib

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000
"""Most pixels (width x height) an image may declare; larger ones are refused as
decompression-bomb risks (40 MP is already far beyond any re-ID crop or phone photo)."""

MAX_FILE_BYTES = 256 * 2**20
"""Largest file (or upload) read, in bytes: 256 MiB holds even an uncompressed 16-bit RGBA
TIFF of MAX_PIXELS; the bound keeps a huge or endless file from being read into memory."""

MIN_SIDE = 2
"""Smallest allowed width and height in pixels."""

MAX_ASPECT = 20.0
"""Largest allowed long-side / short-side ratio (a 1x10000 strip is not a picture of anyone)."""

FORMATS = ("JPEG", "MPO", "PNG", "BMP", "WEBP", "TIFF", "GIF", "PPM")
"""PIL format names accepted. Multi-frame files (GIF, TIFF, MPO) use their first frame."""

ALPHA_BACKGROUND = (128, 128, 128)
"""Colour that transparent pixels are composited onto. Mid grey rather than white or
black: after ImageNet normalisation it lands near zero, so see-through regions carry
little signal instead of an extreme value."""

# Exceptions PIL plugins raise on malformed data while parsing or decoding.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)

# File signatures of the FORMATS, to tell "not an image" from "an image with a broken header".
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"P6", "PPM"), (b"P5", "PPM"),
)

_ALPHA_MODES = {"RGBA": "RGBA", "RGBa": "RGBA", "LA": "RGBA", "La": "RGBA", "PA": "RGBA"}
_DIRECT_MODES = ("RGB", "L", "1", "CMYK", "YCbCr", "RGBX")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageError(ValueError):
    """An image cannot be used.

    Attributes:
        path: the file (or upload name) that was refused.
        reason: what rule it breaks, in words.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot use image {path!r}: {reason}")

    def __reduce__(self):  # keep (path, reason) across DataLoader worker pickling
        return (type(self), (self.path, self.reason))


def load_rgb(path: str | os.PathLike[str] | bytes) -> Image.Image:
    """Read an image file as a fully loaded, upright, 8-bit RGB image.

    Args:
        path: the image file. ``bytes`` paths (names that are not valid UTF-8) are
            accepted and decoded with the file-system encoding.
    Returns:
        A ``PIL.Image.Image`` of mode ``RGB`` whose pixels are already in memory.
    Raises:
        ImageError: the file is missing, a directory or other non-regular file
            (FIFO, device), unreadable, empty, larger than MAX_FILE_BYTES, not an
            image, truncated/corrupt, of an unsupported format or pixel mode, too
            large (> MAX_PIXELS), too small (< MIN_SIDE) or too elongated (> MAX_ASPECT:1).
    """
    name = os.fsdecode(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; the type is checked on the
        # open descriptor (fstat), so the file cannot be swapped between check and read.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageError(name, "file does not exist") from None
    except IsADirectoryError:
        raise ImageError(name, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(name, "permission denied (the file is not readable)") from None
    except OSError as e:
        raise ImageError(name, f"cannot read file: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ImageError(name, "is a directory, not an image file")
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(name, f"is not a regular file ({_file_kind(st.st_mode)}); only image files are read")
        if st.st_size > MAX_FILE_BYTES:
            raise ImageError(name, f"file is {st.st_size} bytes; at most {MAX_FILE_BYTES} bytes are read")
        chunks, size = [], 0
        while chunk := os.read(fd, min(1 << 20, MAX_FILE_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                break
    except OSError as e:
        raise ImageError(name, f"cannot read file: {e.strerror or e}") from None
    finally:
        os.close(fd)
    return _decode(b"".join(chunks), name)


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO / named pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return f"file type {stat.S_IFMT(mode):#o}"


def load_rgb_bytes(data: bytes, name: str) -> Image.Image:
    """Decode an image held in memory (an upload) with the same rules as :func:`load_rgb`.

    Args:
        data: the encoded file contents.
        name: what to call it in error messages (e.g. the uploaded file name).
    Returns:
        A fully loaded ``PIL.Image.Image`` of mode ``RGB``.
    Raises:
        ImageError: as for :func:`load_rgb`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError(name, f"expected the file contents as bytes, got {type(data).__name__}")
    return _decode(bytes(data), name)


def _decode(data: bytes, name: str) -> Image.Image:
    if len(data) == 0:
        raise ImageError(name, "file is empty (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(name, f"file is more than {MAX_FILE_BYTES} bytes, the most that is read")
    with warnings.catch_warnings():
        # Only turns PIL's bomb warning into an exception; other warnings are untouched.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            if data[4:8] == b"ftyp":  # ISO-BMFF: HEIC/HEIF (phone photos), AVIF, or a video
                brand = data[8:12].decode("ascii", "replace")
                raise ImageError(
                    name, f"unsupported format: an ISO-BMFF file of brand {brand!r} (HEIC/HEIF, AVIF or video); "
                    f"convert it to JPEG or PNG; supported formats are {list(FORMATS)}"
                ) from None
            fmt = next((f for sig, f in _SIGNATURES if data.startswith(sig)), None)
            if fmt is not None:
                raise ImageError(
                    name, f"corrupt or truncated {fmt} header: the file starts like a {fmt} image "
                    f"but its header cannot be parsed ({len(data)} bytes)"
                ) from None
            raise ImageError(
                name, f"not an image: no known image format starts with bytes {data[:8]!r}"
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(
                name, f"header claims more than {MAX_PIXELS} pixels (decompression-bomb guard): {e}"
            ) from None
        except _DECODE_ERRORS as e:
            raise ImageError(name, f"corrupt image header: {e}") from None
        with im:
            _check_header(im, name)
            try:
                im.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                raise ImageError(name, f"decompression-bomb guard: {e}") from None
            except _DECODE_ERRORS as e:
                raise ImageError(name, f"truncated or corrupt {im.format} data: {e}") from None
            try:
                upright = ImageOps.exif_transpose(im)
            except _DECODE_ERRORS as e:
                raise ImageError(name, f"corrupt EXIF orientation data: {e}") from None
    return _to_rgb(upright, name)


def _check_header(im: Image.Image, name: str) -> None:
    """Refuse on format and declared size alone, before any pixel is decoded."""
    if im.format not in FORMATS:
        raise ImageError(name, f"unsupported format {im.format!r}; supported formats are {list(FORMATS)}")
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise ImageError(
            name,
            f"{w}x{h} = {w * h} pixels exceeds the limit of {MAX_PIXELS} pixels (decompression-bomb guard)",
        )
    if min(w, h) < MIN_SIDE:
        raise ImageError(name, f"{w}x{h} is too small; width and height must be at least {MIN_SIDE} pixels")
    ratio = max(w, h) / min(w, h)
    if ratio > MAX_ASPECT:
        raise ImageError(
            name, f"{w}x{h} has aspect ratio {ratio:.1f}:1; the long side may be at most {MAX_ASPECT:g}x the short side"
        )


def _to_rgb(im: Image.Image, name: str) -> Image.Image:
    """Any supported pixel mode -> 8-bit RGB (a new image; `im` is not modified)."""
    mode = im.mode
    if mode == "P":
        if "transparency" in im.info:
            return _composite(im.convert("RGBA"))
        return im.convert("RGB")
    if mode in _ALPHA_MODES:
        return _composite(im.convert(_ALPHA_MODES[mode]))
    if mode in _SIXTEEN_BIT_MODES:
        # 16-bit samples (PIL gives 16-bit PNG/TIFF greyscale as I;16* or I): scale
        # 0..65535 onto 0..255 with rounding; "I" values outside 0..65535 are clipped.
        a = np.asarray(im).astype(np.float64)  # (H, W)
        a8 = np.clip(np.rint(np.clip(a, 0, 65535) * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return Image.fromarray(a8, mode="L").convert("RGB")
    if mode in _DIRECT_MODES:
        return im if mode == "RGB" else im.convert("RGB")
    raise ImageError(
        name,
        f"unsupported pixel mode {mode!r}; supported are 8-bit L/P/RGB/RGBA/LA/CMYK/YCbCr and 16-bit greyscale",
    )


def _composite(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")
