"""Peak memory of decoding a 16-bit decompression bomb vs a normal small image, each in a fresh process.

    .venv/bin/python benchmarks/bench_decode_memory.py [--json docs/measurements/decode_memory.json]

The bomb is a 13000 x 13000 16-bit grayscale PNG of one constant value: about 330 KB on disk, 169 million
pixels (under Pillow's own bomb limit of 2 x 89.5 million), 338 MB as Pillow's 16-bit image. Each case runs
`decode_image` in its own subprocess (so one case's freed memory cannot hide another's peak) and reads that
process's peak RSS from the kernel (`wait4`'s `ru_maxrss`):

  baseline          an 8x8 PNG
  bomb, default     the bomb with the default pixel cap: refused from its header, before any pixel is decoded
  bomb, cap lifted  the bomb with the cap raised above its size: decoded and reduced to the model's size

and prints each peak, its ratio to the baseline (target for the default: <= 1.5x) and the growth over the
baseline next to the per-worker bound `imageio.decode_memory_bound` states. The processes import what an
`infer` decoder thread imports (numpy, Pillow, the decoder module), not the backends: the figures are the
decoder's own, with nothing else in the process to hide them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
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


def write_16bit_bomb(path: Path, side: int = BOMB_SIDE, level: int = 0x8000) -> Path:
    """A side x side 16-bit grayscale PNG of one value, compressed row by row (never held whole in memory)."""
    row = b"\0" + struct.pack(">H", level) * side  # filter byte 0 + big-endian samples
    deflate = zlib.compressobj(9)
    data = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data)
                     + png_chunk(b"IEND", b""))
    return path


_CHILD = """
import sys
from atld_deploy.errors import DataError
from atld_deploy.imageio import decode_image
try:
    a = decode_image(sys.argv[1], 1, 32, max_pixels=int(sys.argv[2]))
    print("decoded", a.shape)
except DataError as e:
    print("refused:", e)
"""


def peak_rss_mb(image: Path, max_pixels: int) -> tuple[float, str]:
    """Peak RSS (MiB) of a fresh process decoding `image` to 32x32 gray, and what it printed."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(image), str(max_pixels)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    said = proc.stdout.read().strip()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"the decoding process failed (exit {proc.returncode}): {said}")
    return usage.ru_maxrss / 1024, said


def machine() -> dict[str, object]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "loadavg": Path("/proc/loadavg").read_text().split()[:3],
            "platform": platform.platform()}


def versions() -> dict[str, str]:
    import numpy
    import PIL

    return {"python": platform.python_version(), "numpy": numpy.__version__, "pillow": PIL.__version__}


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    from PIL import Image

    from atld_deploy.imageio import DEFAULT_MAX_PIXELS, decode_memory_bound
    from atld_deploy.io import write_json_atomic

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "small.png"
        Image.new("L", (8, 8), 128).save(small)
        bomb = write_16bit_bomb(Path(tmp) / "bomb16.png")
        lifted = BOMB_SIDE * BOMB_SIDE
        base, _ = peak_rss_mb(small, DEFAULT_MAX_PIXELS)
        cases = {"bomb, default cap": peak_rss_mb(bomb, DEFAULT_MAX_PIXELS),
                 "bomb, cap lifted": peak_rss_mb(bomb, lifted)}
        bomb_kb = bomb.stat().st_size / 1024
    figures: dict[str, object] = {"baseline_peak_rss_mib": round(base, 1), "bomb_file_kib": round(bomb_kb, 1),
                                  "bomb_pixels": lifted, "default_max_pixels": DEFAULT_MAX_PIXELS, "cases": {}}
    print(f"baseline (8x8 PNG): peak RSS {base:.0f} MiB; bomb: {BOMB_SIDE}x{BOMB_SIDE} 16-bit, {bomb_kb:.0f} KiB")
    for name, (rss, said) in cases.items():
        cap = DEFAULT_MAX_PIXELS if "default" in name else lifted
        bound = decode_memory_bound(cap, size=32) / 2**20
        row = {"max_pixels": cap, "peak_rss_mib": round(rss, 1), "ratio_to_baseline": round(rss / base, 3),
               "growth_mib": round(rss - base, 1), "stated_bound_mib": round(bound, 1), "outcome": said}
        figures["cases"][name] = row  # type: ignore[index]
        print(f"{name:18s} peak RSS {rss:6.0f} MiB = {rss / base:.2f}x baseline; growth {rss - base:5.0f} MiB "
              f"(stated bound at --max-pixels {cap}: {bound:.0f} MiB) -> {said}")
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"target for the default cap: <= 1.5x baseline; load average {' '.join(load)}")
    if args.json:
        record = {"command": "python benchmarks/bench_decode_memory.py --json " + str(args.json), "commit": commit(),
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "machine": machine(), "versions": versions(), "figures": figures}
        write_json_atomic(args.json, record)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
