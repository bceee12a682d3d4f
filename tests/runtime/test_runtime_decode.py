"""Decoding every listed image kind, every kind of broken file, and the folder walk (no model needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import BROKEN, LOSSLESS, LOSSY, exif_with_orientation
from PIL import Image

from atld_deploy.errors import DataError
from atld_deploy.imageio import decode_image
from atld_deploy.runtime.folder import _decode_chunk, walk_files


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
    d = _decode_chunk([(zoo / "base.png", None), (zoo / rel, None)], zoo, channels=1, size=8)
    assert d.rels == ["base.png", rel] and d.images is not None and d.images.shape == (1, 8, 8, 1)
    err = d.errors[1]
    assert d.errors[0] is None and err is not None and match in err
    assert str(zoo) not in err.split("(")[0]  # the line carries the relative path; the message names the problem


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: file permissions cannot make a file unreadable")
def test_unreadable_permissions_give_an_error(tmp_path: Path, zoo: Path) -> None:
    p = tmp_path / "locked.png"
    p.write_bytes((zoo / "base.png").read_bytes())
    p.chmod(0)
    d = _decode_chunk([(p, None)], tmp_path, channels=1, size=8)
    assert d.images is None and "ermission" in str(d.errors[0])


def test_decode_error_names_the_file(zoo: Path) -> None:
    with pytest.raises(DataError, match="not_an_image.jpg"):
        decode_image(zoo / "broken/not_an_image.jpg", 1, 8)


def test_walk_is_sorted_recursive_includes_any_extension_and_skips_hidden(zoo: Path) -> None:
    rels = [p.relative_to(zoo).as_posix() for p, err in walk_files(zoo)]
    assert sorted(rels) == sorted(LOSSLESS + LOSSY + BROKEN)
    assert rels == [p.relative_to(zoo).as_posix() for p, _ in walk_files(zoo)]  # stable
    assert rels.index("base.png") < rels.index("bmp/base.bmp") < rels.index("broken/empty.png")
    assert ".hidden.png" not in rels and "noext/digit" in rels and "broken/notes.txt" in rels
