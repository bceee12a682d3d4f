"""Decoding every listed image kind, every kind of broken file, and the folder walk (no model needed)."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import BROKEN, LOSSLESS, LOSSY, exif_with_orientation
from PIL import Image

from atld_deploy.errors import DataError
from atld_deploy import imageio
from atld_deploy.imageio import decode_image
from atld_deploy.runtime.folder import Entry, _decode_chunk, walk_files


@pytest.mark.parametrize("rel", LOSSLESS)
def test_lossless_kinds_decode_to_the_base_digit_exactly(zoo: Path, base_digit: np.ndarray, rel: str) -> None:
    a = decode_image(zoo / rel, channels=1, size=8)
    assert a.shape == (8, 8, 1) and a.dtype == np.uint8
    np.testing.assert_array_equal(a[:, :, 0], base_digit)


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    upright = np.zeros((16, 16, 3), np.uint8)
    upright[:8] = 255  # top half white
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # white on the left when stored
    stored.save(tmp_path / "o.jpg", quality=95, exif=exif_with_orientation(6))
    a = decode_image(tmp_path / "o.jpg", channels=3, size=16).astype(int)
    assert a[:8].mean() > 240 and a[8:].mean() < 15


def test_gif_gives_its_first_frame(tmp_path: Path) -> None:
    first, second = Image.new("L", (8, 8), 10), Image.new("L", (8, 8), 200)
    first.save(tmp_path / "a.gif", save_all=True, append_images=[second])
    assert decode_image(tmp_path / "a.gif", channels=1, size=8).max() == 10


def test_rgba_is_composited_on_black_and_palette_keeps_colours(tmp_path: Path) -> None:
    Image.new("RGBA", (8, 8), (200, 100, 50, 0)).save(tmp_path / "t.png")
    assert decode_image(tmp_path / "t.png", channels=3, size=8).max() == 0  # fully transparent -> black
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "p.png", channels=3, size=8)[0, 0], [10, 20, 30])


def test_sixteen_bit_is_scaled_by_full_range_and_cmyk_converted(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "w.png")
    Image.fromarray(np.full((8, 8), 32896, np.uint16)).save(tmp_path / "m.png")  # 128 * 257
    assert decode_image(tmp_path / "w.png", 1, 8).min() == 255
    assert decode_image(tmp_path / "m.png", 1, 8).min() == 128
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(tmp_path / "c.tif")  # full cyan
    np.testing.assert_array_equal(decode_image(tmp_path / "c.tif", 3, 8)[0, 0], [0, 255, 255])


def test_gray_to_rgb_replicates_and_other_sizes_are_resized(zoo: Path, base_digit: np.ndarray) -> None:
    rgb = decode_image(zoo / "base.png", channels=3, size=8)
    assert rgb.shape == (8, 8, 3) and all((rgb[:, :, c] == base_digit).all() for c in range(3))
    assert decode_image(zoo / "big/upscaled.png", channels=1, size=8).shape == (8, 8, 1)


@pytest.mark.parametrize("rel", LOSSY)
def test_lossy_kinds_are_close_to_the_base(zoo: Path, base_digit: np.ndarray, rel: str) -> None:
    a = decode_image(zoo / rel, channels=1, size=8)[:, :, 0].astype(int)
    assert np.abs(a - base_digit).mean() < 20


@pytest.mark.parametrize(
    ("rel", "match"),
    [
        ("broken/empty.png", "empty file"),
        ("broken/truncated.png", "truncated"),
        ("broken/truncated.jpg", "truncated"),
        ("broken/not_an_image.jpg", "cannot identify"),
        ("broken/notes.txt", "cannot identify"),
        ("broken/dangling.png", "no such file"),
    ],
)
def test_each_broken_kind_gives_an_error_not_an_exception(zoo: Path, rel: str, match: str) -> None:
    d = _decode_chunk([Entry(str(zoo / "base.png"), "base.png"), Entry(str(zoo / rel), rel)], channels=1, size=8)
    assert d.rels == ["base.png", rel] and d.images is not None and d.images.shape == (1, 8, 8, 1)
    err = d.errors[1]
    assert d.errors[0] is None and err is not None and match in err
    assert str(zoo) not in err.split("(")[0]  # the line carries the relative path; the message names the problem


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: file permissions cannot make a file unreadable")
def test_unreadable_permissions_give_an_error(tmp_path: Path, zoo: Path) -> None:
    p = tmp_path / "locked.png"
    p.write_bytes((zoo / "base.png").read_bytes())
    p.chmod(0)
    d = _decode_chunk([Entry(str(p), "locked.png")], channels=1, size=8)
    assert d.images is None and "ermission" in str(d.errors[0])


def test_decode_error_names_the_file(zoo: Path) -> None:
    with pytest.raises(DataError, match="not_an_image.jpg"):
        decode_image(zoo / "broken/not_an_image.jpg", 1, 8)


def test_walk_is_sorted_recursive_includes_any_extension_and_skips_hidden(zoo: Path) -> None:
    entries = list(walk_files(zoo))
    rels = [e.rel for e in entries]
    assert sorted(rels) == sorted(LOSSLESS + LOSSY + BROKEN)
    assert all(Path(e.path).relative_to(zoo).as_posix() == e.rel and e.error is None for e in entries)
    assert rels == [e.rel for e in walk_files(zoo)]  # stable
    assert rels.index("base.png") < rels.index("bmp/base.bmp") < rels.index("broken/empty.png")
    assert ".hidden.png" not in rels and "noext/digit" in rels and "broken/notes.txt" in rels


# ---------------------------------------------------------------- the libpng fast path (imageio.py)
def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with its correct CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _with_chunks(png: bytes, chunks: list[tuple[bytes, bytes]], after_idat: bool = False) -> bytes:
    """`png` with extra chunks inserted after IHDR (or just before IEND), CRCs correct."""
    blob = b"".join(_chunk(k, d) for k, d in chunks)
    at = len(png) - 12 if after_idat else 33
    return png[:at] + blob + png[at:]


def _png(a: np.ndarray, mode: str | None = None, convert: str | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(a, mode)
    (img.convert(convert) if convert else img).save(buf, "PNG")
    return buf.getvalue()


def _srgb_icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


INERT = [
    (b"gAMA", struct.pack(">I", 45455)), (b"sRGB", b"\x00"), (b"pHYs", struct.pack(">IIB", 2835, 2835, 1)),
    (b"cHRM", struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)),
    (b"tEXt", b"Comment\x00made by a test"), (b"sBIT", b"\x05"), (b"tIME", struct.pack(">HBBBBB", 2026, 1, 2, 3, 4, 5)),
]


@pytest.mark.parametrize("mode,channels", [("L", 1), ("L", 3), ("RGB", 3)])
def test_libpng_fast_path_gives_pillows_pixels_with_every_inert_chunk(mode: str, channels: int) -> None:
    assert imageio._libpng_decoder() is not None, "torchvision's decode_png op failed to load or its self-test"
    rng = np.random.default_rng(1)
    shape = (8, 8) if mode == "L" else (8, 8, 3)
    icc = (b"iCCP", b"sRGB\x00\x00" + zlib.compress(_srgb_icc()))
    for chunks in [[]] + [[c] for c in INERT] + [[*INERT, icc]]:
        data = _with_chunks(_png(rng.integers(0, 256, shape, dtype=np.uint8), mode), chunks)
        assert imageio.png_fast_path_applies(data, channels, 8), chunks
        fast = imageio._decode_png_fast(data, channels, 8)
        want = imageio._decode_pillow(io.BytesIO(data), channels, 8, "x.png")
        assert fast is not None and fast.dtype == np.uint8 and fast.shape == want.shape == (8, 8, channels)
        np.testing.assert_array_equal(fast, want, err_msg=str([k for k, _ in chunks]))


def test_pixel_changing_pngs_stay_with_pillow_and_decode_as_before(tmp_path: Path) -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    plain = _png(gray, "L")
    rgb = _png(np.stack([gray, 255 - gray, gray // 2], -1), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 3  # rotated 180 degrees
    cases = {
        "transparent gray (tRNS)": (_with_chunks(plain, [(b"tRNS", b"\x00\x00")]), 1),
        "EXIF orientation (eXIf)": (_with_chunks(plain, [(b"eXIf", exif.tobytes())]), 1),
        "eXIf after IDAT": (_with_chunks(plain, [(b"eXIf", exif.tobytes())], after_idat=True), 1),
        "unknown chunk": (_with_chunks(plain, [(b"xxYz", b"1")]), 1),
        "RGB read as gray (Pillow's luma)": (rgb, 1),
        "needs a resize": (_png(np.zeros((9, 8), np.uint8), "L"), 1),
        "16-bit": (_png(np.zeros((8, 8), np.uint16)), 1),
        "palette": (_png(gray, "L", convert="P"), 3),
        "truncated": (plain[:45], 1),
    }
    for name, (data, channels) in cases.items():
        assert not imageio.png_fast_path_applies(data, channels, 8), name
    rotated = tmp_path / "r.png"
    rotated.write_bytes(cases["eXIf after IDAT"][0])
    np.testing.assert_array_equal(decode_image(rotated, 1, 8)[:, :, 0], gray[::-1, ::-1])
    (tmp_path / "t.png").write_bytes(cases["truncated"][0])
    with pytest.raises(DataError, match="t.png"):
        decode_image(tmp_path / "t.png", 1, 8)


def test_a_decode_png_that_disagrees_with_pillow_fails_the_self_test() -> None:
    imageio._self_test(lambda data, channels: imageio._decode_pillow(io.BytesIO(data), channels, 5, "ok.png"))  # agrees
    with pytest.raises(ValueError, match="disagrees with Pillow"):
        imageio._self_test(lambda data, channels: imageio._decode_pillow(io.BytesIO(data), channels, 5, "x.png")[::-1])


def _damaged_pngs(gray: np.ndarray) -> dict[str, bytes]:
    """PNGs that are damaged inside their image data, each with every CRC but the named one correct."""
    rows = b"".join(b"\x00" + r.tobytes() for r in gray)
    ihdr = struct.pack(">IIBBBBB", gray.shape[1], gray.shape[0], 8, 0, 0, 0, 0)

    def png(idat: bytes) -> bytes:
        return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")

    good = png(zlib.compress(rows))
    bad_crc = bytearray(good)
    bad_crc[33 + 8 + len(zlib.compress(rows))] ^= 1  # first byte of IDAT's CRC
    corrupt = bytearray(zlib.compress(rows))
    corrupt[4] ^= 0xFF
    return {
        "idat crc": bytes(bad_crc),
        "corrupt deflate data": png(bytes(corrupt)),
        "short image data": png(zlib.compress(rows[:-5])),
        "bad filter byte": png(zlib.compress(b"\x07" + rows[1:])),
        "extra image data": png(zlib.compress(rows + b"\x00" * 9)),
    }


def test_damaged_pngs_never_reach_libpng_and_never_crash(tmp_path: Path) -> None:
    """torchvision's decode_png segfaults when libpng fails while reading rows; such files must go to Pillow,
    which decodes them or reports them. Run in a child process, so a crash fails this test instead of pytest."""
    gray = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 3)
    for name, data in _damaged_pngs(gray).items():
        assert not imageio.png_fast_path_applies(data, 1, 8), name
        (tmp_path / f"{name.replace(' ', '_')}.png").write_bytes(data)
    script = (
        "import sys, pathlib\n"
        "from atld_deploy.imageio import decode_image\n"
        "from atld_deploy.errors import DataError\n"
        "for p in sorted(pathlib.Path(sys.argv[1]).iterdir()):\n"
        "    try:\n"
        "        decode_image(p, 1, 8); print(p.name, 'decoded')\n"
        "    except DataError as e:\n"
        "        print(p.name, 'error')\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(done.stdout.splitlines()) == 5


def test_huge_files_are_not_read_whole_and_special_files_are_never_opened(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"/dev/zero: not a regular file \(character device\)"):
        decode_image("/dev/zero", 1, 8)
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(imageio._SMALL_FILE + 1)  # sparse: no disk used
    with open(big, "rb") as f:
        assert imageio._read_small(f.fileno()) is None
    with pytest.raises(DataError, match="big.bin: cannot decode image"):
        decode_image(big, 1, 8)  # Pillow reads its header from the open file and reports it


def test_the_walk_marks_what_is_not_a_regular_file_without_opening_it(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "f.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    (tmp_path / "loop").symlink_to(tmp_path)
    (tmp_path / "ok.png").write_bytes(b"")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere")
    errors = {e.rel: e.error for e in walk_files(tmp_path)}
    assert errors == {"f.png": "not a regular file (fifo)", "gone.png": None, "ok.png": None,
                      "loop": "not a regular file (directory; symlinked directories are not walked)",
                      "zero.png": "not a regular file (character device)"}


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes; the decoder must never open it that way. In a
    child process with a time limit, so a regression fails this test instead of hanging the suite."""
    os.mkfifo(tmp_path / "x.png")
    script = ("import sys\nfrom atld_deploy.imageio import decode_image\nfrom atld_deploy.errors import DataError\n"
              "try:\n    decode_image(sys.argv[1], 1, 8)\nexcept DataError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.png")], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == f"{tmp_path / 'x.png'}: not a regular file (fifo)", done.stderr[-2000:]
