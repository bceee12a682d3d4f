"""Image decoding shared by the folder data set and the runtime: any common format to uint8 HWC.

Conversions: EXIF orientation is applied; palette/grayscale/RGBA/CMYK/16-bit are converted to the model's
channel count (RGBA is composited on black, since the models never saw transparency); animated formats
give their first frame. Images whose size differs from the model's are resized with bilinear filtering
(antialiased) to exactly `size x size`, without keeping the aspect ratio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError

RESIZE_POLICY = "bilinear resize (antialiased) to exactly size x size, aspect ratio not kept"


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
        DataError: the file is missing, empty, truncated or not an image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.seek(0)
            img = ImageOps.exif_transpose(img)
            img.load()
            img = _to_mode(img, channels)
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
            a = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such file") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: cannot decode image ({e})") from e
    if a.ndim == 2:
        a = a[:, :, None]
    return a
