"""Image decoding shared by the folder data set and the runtime: any common format to uint8 HWC.

Conversions: EXIF orientation is applied; palette/grayscale/RGBA/CMYK/16-bit are converted to the model's
channel count (RGBA is composited on black, since the models never saw transparency); animated formats
give their first frame. Images whose size differs from the model's are resized with bilinear filtering
(antialiased) to exactly `size x size`, without keeping the aspect ratio.

Decoders: Pillow decodes everything. One common case -- an 8-bit grayscale or RGB PNG already at the
model's size with no chunk that could change its pixels -- is decoded by torchvision's libpng op instead,
which gives the same pixels (tests compare the two) at a fraction of Pillow's per-file Python overhead
and without holding the GIL, so decoder threads overlap inference (issue 4's decode-bound small images).
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import stat
import struct
import threading
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)

RESIZE_POLICY = "bilinear resize (antialiased) to exactly size x size, aspect ratio not kept"

_O_READ = os.O_RDONLY | getattr(os, "O_BINARY", 0)  # O_BINARY: Windows
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks after which libpng's output equals Pillow's: libpng applies gamma/colour-space chunks only when the
# caller asks for a transform, and torchvision asks for none; pixel-changing chunks (tRNS, eXIf orientation,
# APNG frames) and unknown ones send the file to Pillow. tests/runtime/test_runtime_decode.py checks both
# decoders agree on files carrying each of these chunks.
_INERT_PNG_CHUNKS = frozenset({
    b"IHDR", b"IDAT", b"IEND", b"tEXt", b"zTXt", b"iTXt", b"pHYs", b"tIME", b"gAMA", b"cHRM", b"sRGB", b"iCCP",
    b"sBIT", b"bKGD",
})
_GRAY, _RGB = 0, 2  # PNG colour types
_READ_UNCHANGED, _READ_RGB = 0, 3  # torchvision ImageReadMode values


def _to_mode(img: "PIL.Image.Image", channels: int) -> "PIL.Image.Image":  # noqa: F821
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits by the type's full range, not by clipping
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        img = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def decode_image(path: str | Path, channels: int, size: int) -> np.ndarray:
    """Decode one image file to uint8 [size, size, channels].

    Raises:
        DataError: the file is missing, unreadable, empty, truncated or not an image.
    """
    try:
        data = _read_small_file(path)
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such file") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from e
    if data is None:  # large or not a regular file: Pillow reads what it needs from the path
        return _decode_pillow(path, channels, size, path)
    a = _decode_png_fast(data, channels, size) if png_fast_path_applies(data, channels, size) else None
    if a is None:
        a = _decode_pillow(io.BytesIO(data), channels, size, path)
    return a


_SMALL_FILE = 64 << 20  # read whole (for the PNG fast path) only regular files up to this size


def _read_small_file(path: str | Path) -> bytes | None:
    """The whole file if it is a regular file of at most 64 MiB, else None (a video, a device behind a symlink:
    never read whole). os.read skips the buffered file object, whose cost shows on folders of tiny images."""
    fd = os.open(path, _O_READ)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _SMALL_FILE:
            return None
        parts = [os.read(fd, max(st.st_size, 1))]
        while parts[-1] and sum(map(len, parts)) <= _SMALL_FILE:  # a file that grew while read: stop at the cap
            parts.append(os.read(fd, 1 << 20))
    finally:
        os.close(fd)
    return parts[0] if len(parts) == 2 else b"".join(parts)


def _decode_pillow(source: io.BytesIO | str | Path, channels: int, size: int, path: str | Path) -> np.ndarray:
    """Pillow's decode of `source` (the file's bytes, or its path); `path` names the file in errors."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(source) as img:
            img.seek(0)
            img = ImageOps.exif_transpose(img)
            img.load()
            img = _to_mode(img, channels)
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
            a = np.asarray(img, dtype=np.uint8)
    except UnidentifiedImageError as e:
        raise DataError(f"{path}: cannot decode image (cannot identify image file)") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: cannot decode image ({e})") from e
    return a[:, :, None] if a.ndim == 2 else a


def png_fast_path_applies(data: bytes, channels: int, size: int) -> bool:
    """True for a sound, complete 8-bit gray (or, for 3 channels, RGB) non-interlaced PNG of exactly size x size
    with only inert chunks: everything else goes to Pillow.

    RGB -> gray stays with Pillow (its luma weights are not libpng's), and so does anything needing a resize.
    "Sound" is checked here, not left to libpng: torchvision's decode_png crashes the process (segfault, not an
    exception) when libpng fails while reading rows -- a bad CRC, corrupt or short compressed data, a bad filter
    byte -- so every chunk's CRC is verified and the image data inflated and measured before it is called.
    """
    if len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return False
    width, height, depth, colour, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if (width, height, depth, compression, filtering, interlace) != (size, size, 8, 0, 0, 0) or colour not in (
            (_GRAY,) if channels == 1 else (_GRAY, _RGB)):
        return False
    pos, idat, idat_done = 8, [], False
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if kind not in _INERT_PNG_CHUNKS or end > len(data):
            return False
        if zlib.crc32(data[pos + 4 : end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            return False
        if kind == b"IDAT":
            if idat_done:
                return False  # IDAT chunks must be consecutive
            idat.append(data[pos + 8 : end - 4])
        elif idat:
            idat_done = True
        if kind == b"IEND":
            return _image_data_is_sound(b"".join(idat), width, height, 1 if colour == _GRAY else 3)
        pos = end
    return False  # truncated: Pillow reports it


def _image_data_is_sound(compressed: bytes, width: int, height: int, samples: int) -> bool:
    """The zlib stream is complete and holds exactly `height` rows of one valid filter byte + width*samples bytes."""
    row = 1 + width * samples
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(compressed, row * height + 1)
    except zlib.error:
        return False
    if not inflater.eof or inflater.unused_data or inflater.unconsumed_tail or len(raw) != row * height:
        return False
    return max(raw[::row], default=0) <= 4  # filter types 0-4


def _decode_png_fast(data: bytes, channels: int, size: int) -> np.ndarray | None:
    """libpng via torchvision; None when the op is unavailable or the file fails to decode (Pillow then reports it)."""
    decode = _libpng_decoder()
    if decode is None:
        return None
    try:
        return decode(data, channels)
    except RuntimeError:
        return None


_decoder_lock = threading.Lock()
_decoder: list[Callable[[bytes, int], np.ndarray] | None] = []  # [] = not probed yet


def _libpng_decoder() -> Callable[[bytes, int], np.ndarray] | None:
    """torchvision's `image::decode_png` op, loaded once and self-tested against Pillow; None if it cannot be used.

    The op is registered by torchvision's image extension. `import torchvision` would register it too but costs
    2-3 s (it imports every model and data set module), so the extension library is loaded directly, the way
    `torchvision.io` itself loads it; a torchvision whose op behaves differently (or no longer has it: its image
    ops are slated to move out of torchvision) fails the self-test and every file goes to Pillow.
    """
    if not _decoder:
        with _decoder_lock:
            if not _decoder:
                _decoder.append(_load_libpng_decoder())
    return _decoder[0]


def _load_libpng_decoder() -> Callable[[bytes, int], np.ndarray] | None:
    try:
        import torch

        if not _has_decode_png(torch):
            spec = importlib.util.find_spec("torchvision")
            if spec is None or not spec.submodule_search_locations:
                raise ImportError("torchvision is not installed")
            folder = Path(next(iter(spec.submodule_search_locations)))
            libs = sorted(p for p in folder.glob("image*") if p.suffix in (".so", ".pyd", ".dylib"))
            if not libs:
                raise ImportError(f"no image extension in {folder}")
            torch.ops.load_library(str(libs[0]))
        op = torch.ops.image.decode_png

        def decode(data: bytes, channels: int) -> np.ndarray:
            chw = op(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                     _READ_UNCHANGED if channels == 1 else _READ_RGB, False).numpy()
            return chw.reshape(chw.shape[1], chw.shape[2], 1) if channels == 1 else chw.transpose(1, 2, 0)

        _self_test(decode)
        return decode
    except Exception as e:  # noqa: BLE001 - any failure just means Pillow decodes every file
        log.info("libpng fast path unavailable (%s: %s); Pillow decodes every PNG", type(e).__name__, e)
        return None


def _has_decode_png(torch: Any) -> bool:
    try:
        torch.ops.image.decode_png
    except (AttributeError, RuntimeError):
        return False
    return True


def _self_test(decode: Callable[[bytes, int], np.ndarray]) -> None:
    """Gray and RGB PNGs decoded by `decode` and by Pillow must agree, or the fast path is not used."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for mode, shape in (("L", (5, 5)), ("RGB", (5, 5, 3))):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, "PNG")
        data = buf.getvalue()
        for channels in (1, 3) if mode == "L" else (3,):
            want = _decode_pillow(io.BytesIO(data), channels, 5, "self-test.png")
            got = decode(data, channels)
            if got.shape != want.shape or got.dtype != np.uint8 or not np.array_equal(got, want):
                raise ValueError(f"decode_png disagrees with Pillow on a {mode} PNG read as {channels} channel(s)")
