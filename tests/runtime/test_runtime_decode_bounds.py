"""Bounded decoding: the pixel cap, and the stripe-wise reduction that never holds a converted copy of a big image
(its results checked against Pillow's own whole-image reduce-then-resize)."""

from __future__ import annotations

import inspect
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atld_deploy import imageio
from atld_deploy.errors import ConfigError, DataError
from atld_deploy.imageio import DEFAULT_MAX_PIXELS, PILLOW_MAX_PIXELS, check_max_pixels, decode_image


def _smooth(h: int, w: int, channels: int, seed: int = 0) -> np.ndarray:
    """A smooth image with some noise: resampling differences show, and so would a misplaced stripe."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 127 + 100 * np.sin(x / 37.0)[..., None] * np.cos(y / 53.0)[..., None] * np.linspace(1, -1, channels)
    return np.clip(base + rng.normal(0, 8, (h, w, channels)), 0, 255).astype(np.uint8)


def _save(tmp_path: Path, name: str, img: Image.Image) -> Path:
    img.save(tmp_path / name)
    return tmp_path / name


def test_tall_images_are_reduced_in_stripes_exactly_as_pillow_reduces_them_whole(tmp_path: Path) -> None:
    a = _smooth(4000, 600, 3)  # 2.4 Mpx: three stripes of about 1 Mpx
    assert 600 * 4000 > imageio._STRIPE_PIXELS * 2
    p = _save(tmp_path, "tall.png", Image.fromarray(a, "RGB"))
    want = np.asarray(Image.fromarray(a, "RGB").resize((32, 32), Image.Resampling.BILINEAR, reducing_gap=3.0))
    np.testing.assert_array_equal(decode_image(p, 3, 32), want)
    gray = np.asarray(Image.fromarray(a, "RGB").convert("L").resize((32, 32), Image.Resampling.BILINEAR,
                                                                    reducing_gap=3.0))
    assert np.abs(decode_image(p, 1, 32)[:, :, 0].astype(int) - gray).max() <= 1  # luma after vs before resizing


def test_big_rgba_is_composited_on_black_and_big_16bit_scaled_by_full_range(tmp_path: Path) -> None:
    rgb, alpha = _smooth(1500, 1200, 3, seed=1), _smooth(1500, 1200, 1, seed=2)
    rgba = Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA")
    black = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    want = np.asarray(black.resize((24, 24), Image.Resampling.BILINEAR, reducing_gap=3.0)).astype(int)
    got = decode_image(_save(tmp_path, "a.png", rgba), 3, 24).astype(int)
    assert np.abs(got - want).max() <= 2  # premultiplied reduction vs compositing first: rounding only
    deep = (_smooth(1500, 1200, 1, seed=3)[:, :, 0].astype(np.uint16) * 257 + 128)
    ref = np.asarray(Image.fromarray(deep.astype(np.int32), "I").resize((24, 24), Image.Resampling.BILINEAR,
                                                                       reducing_gap=3.0), dtype=np.float64)
    got16 = decode_image(_save(tmp_path, "d.png", Image.fromarray(deep)), 1, 24)[:, :, 0].astype(int)
    assert np.abs(got16 - np.clip(ref / 65535 * 255 + 0.5, 0, 255).astype(int)).max() <= 1


def test_big_palette_image_with_transparency_keeps_its_colours(tmp_path: Path) -> None:
    pal = Image.new("P", (900, 700), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * (256 * 3 - 6))
    pal.info["transparency"] = 0
    pal.paste(0, (0, 0, 450, 700))  # left half transparent: composited to black
    a = decode_image(_save(tmp_path, "p.png", pal), 3, 16)
    np.testing.assert_array_equal(a[:, :7], 0)
    np.testing.assert_array_equal(a[:, 9:], np.broadcast_to([10, 200, 30], (16, 7, 3)))


def test_the_pixel_cap_refuses_from_the_header_and_counts_a_jpegs_reduced_size(tmp_path: Path) -> None:
    p = _save(tmp_path, "s.png", Image.new("L", (100, 100), 7))
    with pytest.raises(DataError, match=r"s.png: image is 100x100 \(10000 pixels\), over the limit of 9999 pixels"):
        decode_image(p, 1, 8, max_pixels=9999)
    assert decode_image(p, 1, 8, max_pixels=10000).max() == 7
    jpeg = tmp_path / "big.jpg"
    Image.fromarray(_smooth(2000, 2000, 3)).save(jpeg, quality=90)  # 4 Mpx; decoded at 1/8 scale for size 8
    assert decode_image(jpeg, 3, 8, max_pixels=1_000_000).shape == (8, 8, 3)
    with pytest.raises(DataError, match="over the limit"):
        decode_image(jpeg, 3, 1000, max_pixels=1_000_000)  # a size that needs the full scale


def test_the_cap_is_checked_before_the_image_data_is_read(tmp_path: Path) -> None:
    """A header promising a huge image over no data at all: refused by the cap, not by a failed decode."""
    buf = io.BytesIO()
    Image.new("L", (50_000, 1_000)).save(buf, "PNG")  # 50 Mpx of one value: a tiny file
    data = buf.getvalue()
    idat = data.index(b"IDAT") - 4
    (tmp_path / "cut.png").write_bytes(data[: idat + 8])  # the header and where the image data would begin
    with pytest.raises(DataError, match=r"image is 50000x1000 \(50000000 pixels\), over the limit of 40000000"):
        decode_image(tmp_path / "cut.png", 1, 8)
    with pytest.raises(DataError, match="cannot decode image"):  # with the cap lifted, the decode itself fails
        decode_image(tmp_path / "cut.png", 1, 8, max_pixels=50_000_000)


@pytest.mark.parametrize("bad", [0, -1, PILLOW_MAX_PIXELS + 1])
def test_max_pixels_outside_what_pillow_decodes_is_a_config_error(bad: int) -> None:
    with pytest.raises(ConfigError, match=rf"--max-pixels must be between 1 and {PILLOW_MAX_PIXELS} .*got {bad}"):
        check_max_pixels(bad)
    assert check_max_pixels(PILLOW_MAX_PIXELS) == PILLOW_MAX_PIXELS


def test_pillow_limit_and_cli_default_agree_with_the_decoder() -> None:
    from atld_deploy.commands.infer import infer

    assert PILLOW_MAX_PIXELS == 2 * Image.MAX_IMAGE_PIXELS  # Pillow's own refusal, as this Pillow has it
    assert inspect.signature(infer).parameters["max_pixels"].default.default == DEFAULT_MAX_PIXELS
    assert imageio.decode_memory_bound() == 4 * DEFAULT_MAX_PIXELS + (64 << 20) + (16 << 20) + 4 * 192 ** 2
