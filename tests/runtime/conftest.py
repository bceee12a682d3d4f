"""Runtime fixtures: real artifacts exported from the session's tiny ATLD run, and a folder of every image kind."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Files whose decoded 8x8 grayscale pixels equal the base digit exactly (lossless encodings/conversions).
LOSSLESS = [
    "base.png", "bmp/base.bmp", "tiff/base.tif", "webp/lossless.webp", "gif/anim.gif", "palette.png",
    "rgba.png", "la.png", "rgb.png", "gray16.png", "cmyk.tif", "exif/rotated.png", "noext/digit",
]
LOSSY = ["photo.jpg", "exif/rotated.jpg", "big/upscaled.png"]
BROKEN = ["broken/empty.png", "broken/truncated.png", "broken/truncated.jpg", "broken/not_an_image.jpg",
          "broken/notes.txt", "broken/dangling.png"]


@pytest.fixture(scope="session")
def base_digit() -> np.ndarray:
    """One 8x8 uint8 digit from the embedded test split (the model's own input size)."""
    from atld_deploy.data import load_dataset

    x, _ = load_dataset("digits").test.batch([3])
    return (x[0, 0].numpy() * 255).round().astype(np.uint8)


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def write_zoo(root: Path, base: np.ndarray) -> Path:
    """Every listed kind of image (see LOSSLESS/LOSSY) and every kind of broken file (BROKEN) under `root`."""
    g = Image.fromarray(base, "L")
    for rel in LOSSLESS + LOSSY + BROKEN:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
    g.save(root / "base.png")
    g.save(root / "bmp/base.bmp")
    g.save(root / "tiff/base.tif")
    g.convert("RGB").save(root / "webp/lossless.webp", lossless=True)
    inverted = Image.fromarray(255 - base, "L")
    g.save(root / "gif/anim.gif", save_all=True, append_images=[inverted], duration=100, loop=0)
    pal = Image.new("P", g.size)
    pal.putpalette([v for i in range(256) for v in (i, i, i)])
    pal.putdata(list(base.flatten()))
    pal.save(root / "palette.png")
    rgba = g.convert("RGBA")
    rgba.putalpha(255)
    rgba.save(root / "rgba.png")
    Image.merge("LA", [g, Image.new("L", g.size, 255)]).save(root / "la.png")
    g.convert("RGB").save(root / "rgb.png")
    Image.fromarray(base.astype(np.uint16) * 257).save(root / "gray16.png")  # 16-bit grayscale
    k = Image.fromarray(255 - base, "L")
    zero = Image.new("L", g.size, 0)
    Image.merge("CMYK", [zero, zero, zero, k]).save(root / "cmyk.tif")
    # stored rotated; EXIF orientation 6 says "rotate 270 to display", which restores the base
    g.transpose(Image.Transpose.ROTATE_90).save(root / "exif/rotated.png", exif=exif_with_orientation(6))
    (root / "noext/digit").write_bytes((root / "base.png").read_bytes())
    g.convert("RGB").save(root / "photo.jpg", quality=95)
    g.transpose(Image.Transpose.ROTATE_90).convert("RGB").save(root / "exif/rotated.jpg", quality=95,
                                                                 exif=exif_with_orientation(6))
    g.resize((32, 32), Image.Resampling.NEAREST).save(root / "big/upscaled.png")
    g.save(root / ".hidden.png")  # hidden: skipped
    # broken files
    (root / "broken/empty.png").write_bytes(b"")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, "PNG")
    (root / "broken/truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    noise.save(buf, "JPEG", quality=90)
    (root / "broken/truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "broken/not_an_image.jpg").write_text("this is not a JPEG\n")
    (root / "broken/notes.txt").write_text("notes\n")
    os.symlink(root / "broken/does-not-exist.png", root / "broken/dangling.png")
    return root


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory, base_digit: np.ndarray) -> Path:
    """A folder mixing every image kind with broken files (read-only for tests: copy before changing)."""
    return write_zoo(tmp_path_factory.mktemp("zoo") / "images", base_digit)
