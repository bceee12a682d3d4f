"""Peak memory of decoding a 16-bit decompression bomb vs a normal small image, each in a fresh process.

    .venv/bin/python benchmarks/bench_decode_memory.py [--json docs/measurements/decode_memory.json]

The bomb is a 13000 x 13000 16-bit grayscale PNG of one constant value: about 330 KB on disk, 169 million
pixels (under Pillow's own bomb limit of 2 x 89.5 million), 338 MB as Pillow's 16-bit image. Each case runs
`decode_image` in its own subprocess (so one case's freed memory cannot hide another's peak) and reads that
process's peak RSS from the kernel (`wait4`'s `ru_maxrss`):

  baseline          an 8x8 PNG
  bomb, default     the bomb with the default pixel cap: refused from its header, before any pixel is decoded
  bomb, cap lifted  the bomb with the cap raised above its size: decoded and reduced to the model's size
  RGBA at the cap   an 8000 x 5000 8-bit RGBA PNG (40 million pixels, the default cap; Pillow's widest mode,
                    4 bytes a pixel, with alpha to composite): the worst case the default allows

and prints each peak, its ratio to the baseline (target for the default: <= 1.5x) and the growth over the
baseline next to the per-worker bound `imageio.decode_memory_bound` states. Each case runs in two kinds of
process: "decoder" imports only what decoding needs (numpy, Pillow, the decoder module), so the growth is the
decoder's own with nothing to hide it; "infer-like" first imports torch, onnxruntime and the runtime, as an
`infer` process holds them before its first image, so its ratio is the one an `infer` user sees.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOMB_SIDE = 13000


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_constant_png(path: Path, width: int, height: int, depth: int, colour: int, pixel: bytes) -> Path:
    """A PNG whose every pixel is `pixel` (raw sample bytes), compressed row by row (never held whole)."""
    row = b"\0" + pixel * width  # filter byte 0 + the samples
    deflate = zlib.compressobj(9)
    data = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data)
                     + png_chunk(b"IEND", b""))
    return path


def write_16bit_bomb(path: Path, side: int = BOMB_SIDE, level: int = 0x8000) -> Path:
    """A side x side 16-bit grayscale PNG of one value."""
    return write_constant_png(path, side, side, 16, 0, struct.pack(">H", level))


_CHILD = """
import sys
if sys.argv[3] == "infer-like":
    import onnxruntime, torch, atld_deploy.runtime  # noqa: F401 - what an infer process holds before decoding
from atld_deploy.errors import DataError
from atld_deploy.imageio import decode_image
try:
    a = decode_image(sys.argv[1], 1, 32, max_pixels=int(sys.argv[2]))
    print("decoded", a.shape)
except DataError as e:
    print("refused:", e)
"""


def peak_rss_mb(image: Path, max_pixels: int, kind: str) -> tuple[float, str]:
    """Peak RSS (MiB) of a fresh `kind` process decoding `image` to 32x32 gray, and what it printed."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(image), str(max_pixels), kind], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    said = proc.stdout.read().strip()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"the decoding process failed (exit {proc.returncode}): {said}")
    return usage.ru_maxrss / 1024, said


def measure(kind: str, small: Path, cases: dict[str, tuple[Path, int]]) -> dict[str, object]:
    """The baseline and every case (image, cap) in fresh `kind` processes, printed and returned."""
    from atld_deploy.imageio import decode_memory_bound

    base, _ = peak_rss_mb(small, 1 << 20, kind)
    rows: dict[str, object] = {"baseline_peak_rss_mib": round(base, 1)}
    print(f"{kind} process, baseline (8x8 PNG): peak RSS {base:.0f} MiB")
    for name, (image, cap) in cases.items():
        rss, said = peak_rss_mb(image, cap, kind)
        bound = decode_memory_bound(cap, size=32) / 2**20
        said = said.replace(str(image), image.name)
        rows[name] = {"max_pixels": cap, "peak_rss_mib": round(rss, 1), "ratio_to_baseline": round(rss / base, 3),
                      "growth_mib": round(rss - base, 1), "stated_bound_mib": round(bound, 1), "outcome": said}
        print(f"  {name:17s} peak RSS {rss:6.0f} MiB = {rss / base:.2f}x baseline; growth {rss - base:5.0f} MiB "
              f"(stated bound at --max-pixels {cap}: {bound:.0f} MiB) -> {said}")
    return rows


def main() -> None:
    from PIL import Image

    from atld_deploy.imageio import DEFAULT_MAX_PIXELS
    from atld_deploy.measure import machine, write_measurement

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()
    figures: dict[str, object] = {"bomb_pixels": BOMB_SIDE * BOMB_SIDE, "default_max_pixels": DEFAULT_MAX_PIXELS}
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "small.png"
        Image.new("L", (8, 8), 128).save(small)
        bomb = write_16bit_bomb(Path(tmp) / "bomb16.png")
        rgba = write_constant_png(Path(tmp) / "rgba40mp.png", 8000, 5000, 8, 6, bytes([200, 100, 50, 128]))
        figures["bomb_file_kib"] = round(bomb.stat().st_size / 1024, 1)
        print(f"bomb: {BOMB_SIDE}x{BOMB_SIDE} 16-bit grayscale PNG, {figures['bomb_file_kib']} KiB")
        cases = {"bomb, default cap": (bomb, DEFAULT_MAX_PIXELS), "bomb, cap lifted": (bomb, BOMB_SIDE * BOMB_SIDE),
                 "RGBA at the cap": (rgba, DEFAULT_MAX_PIXELS)}
        for kind in ("decoder", "infer-like"):
            figures[kind] = measure(kind, small, cases)
    load = machine()["loadavg"]
    print(f"target for the default cap: <= 1.5x baseline; load average {' '.join(str(v) for v in load)}")
    if args.json:
        write_measurement(args.json, "python benchmarks/bench_decode_memory.py --json " + str(args.json), figures)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
