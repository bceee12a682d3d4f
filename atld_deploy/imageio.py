"""Image decoding shared by the folder data set and the runtime: any common format to uint8 HWC.

Conversions: EXIF orientation is applied; palette/grayscale/RGBA/CMYK/16-bit are converted to the model's
channel count (RGBA is composited on black, since the models never saw transparency); animated formats
give their first frame. Images whose size differs from the model's are resized with bilinear filtering
(antialiased) to exactly `size x size`, without keeping the aspect ratio.

Decoders: Pillow decodes everything. One common case -- an 8-bit grayscale or RGB PNG already at the
model's size with no chunk that could change its pixels -- is decoded by torchvision's libpng op instead,
which gives the same pixels (tests compare the two) at a fraction of Pillow's per-file Python overhead
and without holding the GIL, so decoder threads overlap inference on folders of small images.

What is opened: regular files only. The type is checked before opening and again on the open descriptor
(opened non-blocking), so a FIFO, socket or device is one `DataError` ("not a regular file (fifo)"), never a
read that blocks forever or never ends.

Memory: an image whose decoded size exceeds `max_pixels` (default `DEFAULT_MAX_PIXELS`, 40 million: an
8K frame or a 36-megapixel photo fits; Pillow's own refusal starts at 179 million) is refused from its
header, before any pixel is decoded. JPEGs are decoded at a reduced DCT scale when much larger than the
model's input ("draft"), and that reduced size is what the cap counts. Below the cap, the decoded image is
held once, in Pillow's own mode (at most 4 bytes a pixel: 16-bit grayscale stays 16-bit integers, never
floating point); mode conversion and an integer box reduction to a few times the model's size then run one
horizontal stripe at a time, and only that small image is resized exactly and converted to 8 bits. So one
decoder thread holds at most `decode_memory_bound(max_pixels, size)` bytes: 4 bytes per pixel of the cap,
plus the file's bytes when read whole (at most 64 MiB), 16 MiB for stripes and Pillow's buffers, and the
reduced image (under 6 x size a side) -- about 233 MiB at the default cap for a 32-pixel model. `infer` runs
one decoder per worker thread, so its decoding holds at most `--workers` times that.
`benchmarks/bench_decode_memory.py` measures it on a 16-bit decompression bomb.
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

from .errors import ConfigError, DataError

log = logging.getLogger(__name__)

RESIZE_POLICY = "bilinear resize (antialiased) to exactly size x size, aspect ratio not kept"
DEFAULT_MAX_PIXELS = 40_000_000  # decoded pixels per image; see the module docstring
PILLOW_MAX_PIXELS = 2 * 89_478_485  # Pillow refuses larger images itself (2 x its MAX_IMAGE_PIXELS default)
_REDUCING_GAP = 3  # box-reduce to at least 3x the model's size before the exact resize (Pillow's "near-fair" gap)
_STRIPE_PIXELS = 1 << 20  # pixels converted and reduced at a time
_SLACK_BYTES = 16 << 20  # stripes (a few copies of 1 Mpx at 4 bytes) and Pillow's own buffers

_O_READ = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)  # NONBLOCK: a FIFO opens at once
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


def decode_memory_bound(max_pixels: int = DEFAULT_MAX_PIXELS, size: int = 32) -> int:
    """The most bytes one `decode_image` call holds for an image of at most `max_pixels` decoded pixels: the
    decoded image (at most 4 bytes a pixel), the file's bytes when read whole, the stripes, and the reduced
    image (under 6 x `size` a side, since the box reduction stops at 3 x `size`)."""
    return 4 * max_pixels + _SMALL_FILE + _SLACK_BYTES + 4 * (6 * size) ** 2


def check_max_pixels(max_pixels: int) -> int:
    """`max_pixels` if it is a usable cap, else ConfigError (Pillow refuses larger images whatever we allow)."""
    if not 1 <= max_pixels <= PILLOW_MAX_PIXELS:
        raise ConfigError(f"--max-pixels must be between 1 and {PILLOW_MAX_PIXELS} (Pillow refuses larger images "
                          f"itself), got {max_pixels}; the default is {DEFAULT_MAX_PIXELS}")
    return max_pixels


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words, from its `st_mode`."""
    for test, kind in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"


def decode_image(path: str | Path, channels: int, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode one image file to uint8 [size, size, channels].

    Args:
        path: a regular file (or a symlink to one).
        channels: 1 (grayscale) or 3 (RGB).
        size: the output's height and width.
        max_pixels: refuse images that would decode to more pixels than this (see the module docstring).

    Raises:
        DataError: the file is missing, unreadable, not a regular file, empty, truncated, not an image, or
            larger than `max_pixels`.
    """
    try:
        fd = _open_regular(path)
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such file") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from e
    with os.fdopen(fd, "rb") as f:
        try:
            data = _read_small(f.fileno())
        except OSError as e:
            raise DataError(f"{path}: cannot read file ({e.strerror or e})") from e
        if data is None:  # large: Pillow reads what it needs from the open file
            return _decode_pillow(f, channels, size, path, max_pixels)
    if size * size <= max_pixels and png_fast_path_applies(data, channels, size):
        a = _decode_png_fast(data, channels, size)
        if a is not None:
            return a
    return _decode_pillow(io.BytesIO(data), channels, size, path, max_pixels)


_SMALL_FILE = 64 << 20  # read whole (for the PNG fast path) only files up to this size


def _open_regular(path: str | Path) -> int:
    """A read descriptor of `path`, which must be a regular file: checked before opening (a socket cannot be
    opened, a FIFO would block) and again on the descriptor (the name may have been swapped in between)."""
    for_kind = os.stat(path).st_mode
    if not stat.S_ISREG(for_kind):
        raise DataError(f"{path}: not a regular file ({file_kind(for_kind)})")
    fd = os.open(path, _O_READ)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise DataError(f"{path}: not a regular file ({file_kind(mode)})")
    return fd


def _read_small(fd: int) -> bytes | None:
    """The whole file behind `fd` if it is at most 64 MiB, else None (then never read whole). os.read skips the
    buffered file object, whose cost shows on folders of tiny images."""
    size = os.fstat(fd).st_size
    if size > _SMALL_FILE:
        return None
    parts = [os.read(fd, max(size, 1))]
    while parts[-1] and sum(map(len, parts)) <= _SMALL_FILE:  # a file that grew while read: stop at the cap
        parts.append(os.read(fd, 1 << 20))
    return parts[0] if len(parts) == 2 else b"".join(parts)


# EXIF orientation -> the transpose that displays the image upright (as ImageOps.exif_transpose does)
_ORIENTATION = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
                7: "TRANSVERSE", 8: "ROTATE_90"}


def _decode_pillow(source: Any, channels: int, size: int, path: str | Path,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Pillow's decode of `source` (the file's bytes or the open file); `path` names the file in errors."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as img:
            img.seek(0)
            img.draft(img.mode, (size * _REDUCING_GAP, size * _REDUCING_GAP))  # JPEG: decode at a reduced scale
            w, h = img.size
            if w * h > max_pixels:
                raise DataError(f"{path}: image is {w}x{h} ({w * h} pixels), over the limit of {max_pixels} "
                                f"pixels; raise --max-pixels to decode it")
            img.load()
            orientation = img.getexif().get(0x0112)
            small = _reduce_and_convert(img, channels, size)
        if orientation in _ORIENTATION:
            small = small.transpose(getattr(Image.Transpose, _ORIENTATION[orientation]))
        a = np.asarray(small, dtype=np.uint8)
    except UnidentifiedImageError as e:
        raise DataError(f"{path}: cannot decode image (cannot identify image file)") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: cannot decode image ({e})") from e
    return a[:, :, None] if a.ndim == 2 else a


def _working_mode(img: "PIL.Image.Image") -> str:  # noqa: F821
    """The mode stripes are converted to before reducing: one Pillow can reduce and resize, with alpha
    premultiplied (which is compositing on black), 16-bit as 32-bit integers."""
    if img.mode in ("P", "PA"):
        return "RGBa" if img.mode == "PA" or img.has_transparency_data else "RGB"
    return {"1": "L", "RGBA": "RGBa", "LA": "La"}.get(img.mode, "I" if img.mode.startswith("I") else img.mode)


def _convert(part: "PIL.Image.Image", mode: str) -> "PIL.Image.Image":  # noqa: F821
    if part.mode == mode:
        return part
    if part.mode == "P" and mode == "RGBa":
        part = part.convert("RGBA")  # Pillow has no direct P -> RGBa
    return part.convert(mode)


def _reduce_and_convert(img: "PIL.Image.Image", channels: int, size: int) -> "PIL.Image.Image":  # noqa: F821
    """`img` (loaded) as an 8-bit L or RGB image of exactly size x size, never copying it whole: stripes are
    converted to the working mode and box-reduced by an integer factor, then the small result is resized."""
    from PIL import Image

    work = _working_mode(img)
    # 16/32-bit grayscale: scaled to 8 bits by the type's full range, not by clipping
    top = 65535.0 if img.mode.startswith("I;16") or (work == "I" and img.getextrema()[1] > 255) else 255.0
    w, h = img.size
    fx, fy = max(1, w // (size * _REDUCING_GAP)), max(1, h // (size * _REDUCING_GAP))
    rows = max(fy, _STRIPE_PIXELS // w // fy * fy)
    if rows >= h:
        reduced = _convert(img, work)
        reduced = reduced.reduce((fx, fy)) if (fx, fy) != (1, 1) else reduced
    else:
        reduced = Image.new(work, (-(-w // fx), -(-h // fy)))
        for y in range(0, h, rows):
            part = _convert(img.crop((0, y, w, min(h, y + rows))), work)
            reduced.paste(part.reduce((fx, fy)) if (fx, fy) != (1, 1) else part, (0, y // fy))
    if reduced.size != (size, size):
        reduced = reduced.resize((size, size), Image.Resampling.BILINEAR, box=(0, 0, w / fx, h / fy),
                                 reducing_gap=None)
    if work == "RGBa":
        reduced = Image.merge("RGB", reduced.split()[:3])  # premultiplied colour = composited on black
    elif work == "La":
        reduced = reduced.getchannel(0)
    elif work == "I":
        a = np.asarray(reduced, dtype=np.float64)  # size x size only
        reduced = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    return reduced.convert("L" if channels == 1 else "RGB")


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

    The op is registered by torchvision's image extension. `import torchvision` would register it too but is
    slow (it imports every model and data set module), so the extension library is loaded directly, the way
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
