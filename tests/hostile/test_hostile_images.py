"""Hostile files in the images folder: FIFOs, sockets, devices, a 16-bit decompression bomb.

Each case runs the real `atld-deploy infer` in a subprocess with a hard time limit and checks the message, the
exit code, and that nothing outside the predictions file was written or deleted.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path

import pytest
from cli_probe import REPO, assert_only_written, fingerprint, read_jsonl, run_cli, write_digits

from atld_deploy.imageio import DEFAULT_MAX_PIXELS, decode_memory_bound

CLASSIFIED = {"path", "label", "class", "confidence", "p_natural"}


def _bench_module():  # noqa: ANN202 - the benchmark's own bomb writer, so the test decodes the file it measures
    spec = importlib.util.spec_from_file_location("bench_decode_memory", REPO / "benchmarks/bench_decode_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 13000x13000 16-bit constant PNG (about 330 KB; 169 million pixels, under Pillow's own limit)."""
    path = _bench_module().write_16bit_bomb(tmp_path_factory.mktemp("bomb") / "bomb16.png")
    assert path.stat().st_size < 400_000
    return path


def test_a_fifo_named_png_is_one_error_row_and_the_good_files_are_classified(tiny_artifacts: Path,
                                                                               tmp_path: Path) -> None:
    images = write_digits(tmp_path / "images", "a.png", "z.png")
    os.mkfifo(images / "x.png")  # opening it for reading would block until a writer comes: forever
    out = tmp_path / "preds.jsonl"
    before = fingerprint(tmp_path)
    r = run_cli("infer", images, "-a", tiny_artifacts, "-o", out, "--no-progress")
    rows = read_jsonl(out)
    assert r.code == 3, r.err
    assert rows["x.png"] == {"path": "x.png", "error": "not a regular file (fifo)"}
    assert set(rows["a.png"]) == set(rows["z.png"]) == CLASSIFIED
    assert "2 classified, 1 unreadable" in r.out
    assert_only_written(tmp_path, before, out)


def test_sockets_devices_and_symlinked_directories_get_a_truthful_error_row(tiny_artifacts: Path,
                                                                             tmp_path: Path) -> None:
    images = write_digits(tmp_path / "i", "a.png")
    (images / "zero.png").symlink_to("/dev/zero")  # a character device: size 0, endless data
    (images / "dir.png").symlink_to(tmp_path)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(images / "sock.png"))
    try:
        out = tmp_path / "preds.jsonl"
        before = fingerprint(tmp_path)
        r = run_cli("infer", images, "-a", tiny_artifacts, "-o", out, "--no-progress")
    finally:
        server.close()
    rows = read_jsonl(out)
    assert r.code == 3, r.err
    assert rows["zero.png"]["error"] == "not a regular file (character device)"
    assert rows["sock.png"]["error"] == "not a regular file (socket)"
    assert rows["dir.png"]["error"] == "not a regular file (directory; symlinked directories are not walked)"
    assert set(rows["a.png"]) == CLASSIFIED
    assert "empty" not in r.out + r.err
    assert_only_written(tmp_path, before, out)


def test_a_16bit_bomb_is_refused_from_its_header_and_memory_stays_at_baseline(tiny_artifacts: Path, bomb: Path,
                                                                               tmp_path: Path) -> None:
    plain = write_digits(tmp_path / "plain", "a.png")
    hostile = write_digits(tmp_path / "hostile", "a.png")
    os.link(bomb, hostile / "bomb16.png")
    baseline = run_cli("infer", plain, "-a", tiny_artifacts, "-o", tmp_path / "base.jsonl", "--no-progress")
    before = fingerprint(tmp_path)
    r = run_cli("infer", hostile, "-a", tiny_artifacts, "-o", tmp_path / "p.jsonl", "--no-progress", "--workers", "2")
    rows = read_jsonl(tmp_path / "p.jsonl")
    assert baseline.code == 0 and r.code == 3, r.err
    assert rows["bomb16.png"]["error"] == (
        f"image is 13000x13000 (169000000 pixels), over the limit of {DEFAULT_MAX_PIXELS} pixels; "
        "raise --max-pixels to decode it")
    assert set(rows["a.png"]) == CLASSIFIED
    # the target the decoder is held to: within 1.5x of an infer run on small images alone
    assert r.max_rss_mb <= 1.5 * baseline.max_rss_mb, (r.max_rss_mb, baseline.max_rss_mb)
    assert_only_written(tmp_path, before, tmp_path / "p.jsonl")


def test_a_16bit_bomb_decoded_under_a_lifted_cap_stays_within_the_stated_bound(tiny_artifacts: Path, bomb: Path,
                                                                                tmp_path: Path) -> None:
    plain = write_digits(tmp_path / "plain", "a.png")
    hostile = write_digits(tmp_path / "hostile", "a.png")
    os.link(bomb, hostile / "bomb16.png")
    cap = 13000 * 13000
    common = ("-a", tiny_artifacts, "--no-progress", "--workers", "1", "--max-pixels", str(cap))
    baseline = run_cli("infer", plain, "-o", tmp_path / "base.jsonl", *common)
    r = run_cli("infer", hostile, "-o", tmp_path / "p.jsonl", *common)
    assert baseline.code == 0 and r.code == 0, r.err
    assert set(read_jsonl(tmp_path / "p.jsonl")["bomb16.png"]) == CLASSIFIED
    # one decoder thread: the docstring's bound for this cap and the model's 8-pixel input
    assert r.max_rss_mb - baseline.max_rss_mb <= decode_memory_bound(cap, size=8) / 2**20, (r.max_rss_mb,
                                                                                            baseline.max_rss_mb)


@pytest.mark.parametrize("value", ["0", "-5", "200000000000"])
def test_max_pixels_out_of_range_is_one_clear_error(tiny_artifacts: Path, tmp_path: Path, value: str) -> None:
    images = write_digits(tmp_path / "images", "a.png")
    before = fingerprint(tmp_path)
    r = run_cli("infer", images, "-a", tiny_artifacts, "-o", tmp_path / "p.jsonl", "--max-pixels", value)
    assert r.code == 2
    assert f"--max-pixels must be between 1 and " in r.err and f"got {value}" in r.err
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1
    assert_only_written(tmp_path, before)
