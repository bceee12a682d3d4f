"""Hostile files where the tool reads and writes: special files named like manifests, configs and weights,
JSON bombs, symlinks planted in a Triton repository, and class or tensor names that would rewrite Triton's
text files. Every CLI case runs in a subprocess under a hard time limit, so a hang fails instead of blocking."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from atld_deploy.errors import AtldError, ConfigError
from atld_deploy.export.manifest import Manifest
from atld_deploy.export.triton import TritonOptions, config_pbtxt, write_triton_repo
from atld_deploy.names import NAME_PATTERN, name_problem

TIME_LIMIT_S = 120  # a refused command answers in seconds; by this limit it is hung
CLI = [sys.executable, "-c", "from atld_deploy.cli import entry; entry()"]
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="this platform has no named pipes")


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=TIME_LIMIT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"atld-deploy {' '.join(map(str, args))} hung for {TIME_LIMIT_S} s")


def _tree(root: Path) -> dict[str, str]:
    """Every entry under root: file digests, symlink targets, and the kind of anything else."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir" if p.is_dir() else "special"
    return out


def _refused(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr[-2000:]


# ---------------------------------------------------------------------------------- special and bomb files

@needs_fifo
def test_verify_refuses_a_fifo_manifest(tmp_path: Path) -> None:
    art = tmp_path / "art"
    art.mkdir()
    os.mkfifo(art / "manifest.json")
    _refused(_cli("verify", art), f"{art / 'manifest.json'} is a FIFO (named pipe), not a regular file")


@pytest.mark.parametrize("make, what", [
    (lambda p: p.mkdir(), "is a directory, not a regular file"),
    (lambda p: p.symlink_to("/dev/zero"), "is a character device, not a regular file"),
    (lambda p: p.write_text("[" * 200_000 + "]" * 200_000), "nested too deeply"),
    (lambda p: p.write_bytes(b" " * (16 << 20) + b"{}"), "larger than the 16 MiB"),
], ids=["directory", "dev-zero", "deep-nesting", "oversize"])
def test_verify_refuses_a_manifest_that_is_not_a_small_json_file(tmp_path: Path, make, what: str) -> None:
    if "dev/zero" in what and not os.path.exists("/dev/zero"):
        pytest.skip("this machine has no /dev/zero")
    art = tmp_path / "art"
    art.mkdir()
    make(art / "manifest.json")
    before = _tree(tmp_path)
    _refused(_cli("verify", art), str(art / "manifest.json"), what)
    assert _tree(tmp_path) == before


def _run_copy(tiny_run: Path, dest: Path) -> Path:
    run = dest / "run"
    shutil.copytree(tiny_run, run)
    return run


@needs_fifo
@pytest.mark.parametrize("name", ["config.json", "classifier.safetensors", "discriminator.safetensors"])
def test_export_refuses_a_run_file_that_is_a_fifo(tiny_run: Path, tmp_path: Path, name: str) -> None:
    run = _run_copy(tiny_run, tmp_path)
    (run / name).unlink()
    os.mkfifo(run / name)
    before = _tree(tmp_path)
    _refused(_cli("export", run, "--out", tmp_path / "art", "--skip-parity"),
             f"{run / name} is a FIFO (named pipe), not a regular file")
    assert _tree(tmp_path) == before  # no artifact, nothing else written


# ---------------------------------------------------------------------------------- Triton repository

def _victim(tmp_path: Path, name: str) -> Path:
    v = tmp_path / "elsewhere" / name
    v.parent.mkdir(exist_ok=True)
    v.write_bytes(f"someone else's {name}\n".encode())
    return v


def test_triton_writer_never_writes_through_a_planted_symlink(tiny_artifacts: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    version = repo / "atld" / "1"
    version.mkdir(parents=True)
    planted = {  # the old fixed temporary name, and every file the writer replaces
        version / ".model.onnx.tmp": _victim(tmp_path, "tmp-target"),
        version / "model.onnx": _victim(tmp_path, "onnx-target"),
        repo / "atld" / "labels.txt": _victim(tmp_path, "labels-target"),
        repo / "atld" / "config.pbtxt": _victim(tmp_path, "config-target"),
    }
    for link, target in planted.items():
        link.symlink_to(target)
    victims = _tree(tmp_path / "elsewhere")
    write_triton_repo(tiny_artifacts, repo, TritonOptions(kind="KIND_CPU"))
    assert _tree(tmp_path / "elsewhere") == victims  # every target byte-identical
    m = Manifest.load(tiny_artifacts)
    model = version / "model.onnx"
    assert not model.is_symlink() and model.read_bytes() == m.graph_path(tiny_artifacts, "pipeline").read_bytes()
    assert not (repo / "atld" / "labels.txt").is_symlink()
    assert (repo / "atld" / "labels.txt").read_text().splitlines() == m.classes
    assert not (repo / "atld" / "config.pbtxt").is_symlink()
    assert (version / ".model.onnx.tmp").is_symlink()  # not the writer's file: left alone, not deleted
    assert sorted(p.name for p in version.iterdir()) == [".model.onnx.tmp", "model.onnx"]  # no temporaries left


def _tampered_artifact(tiny_artifacts: Path, tmp_path: Path, edit) -> Path:
    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts, art)
    d = json.loads((art / "manifest.json").read_text())
    edit(d)
    (art / "manifest.json").write_text(json.dumps(d))
    return art


UNSAFE_NAMES = ["seven\neight", "seven\n", "tab\there", 'say "hi"', "back\\slash", "nul\x00", "ls\u2028ep", "c1\x85"]


def test_the_name_rule_and_its_schema_pattern_agree() -> None:
    import re

    for c in (c for c in range(0x10000) if not 0xD800 <= c < 0xE000):  # past the BMP nothing is forbidden
        name = f"a{chr(c)}b"
        assert (re.search(NAME_PATTERN, name) is None) == (name_problem(name) is not None), hex(c)
    assert re.search(NAME_PATTERN, "seven\n") is None and name_problem("seven\n") is not None  # not `$`'s blind spot
    assert name_problem("café au lait") is None and name_problem("") is not None


@pytest.mark.parametrize("bad", UNSAFE_NAMES)
def test_triton_writer_refuses_an_unsafe_class_name(tiny_artifacts: Path, tmp_path: Path, bad: str) -> None:
    art = _tampered_artifact(tiny_artifacts, tmp_path, lambda d: d["classes"].__setitem__(3, bad))
    with pytest.raises(AtldError, match=r"manifest\.json") as e:  # the manifest's schema or the writer refuses it
        write_triton_repo(art, tmp_path / "repo", TritonOptions(kind="KIND_CPU"))
    assert "\n" not in str(e.value) and repr(bad) in str(e.value)
    assert not (tmp_path / "repo").exists()  # refused before anything was written
    safe = _tampered_artifact(tiny_artifacts, tmp_path / "safe", lambda d: d["classes"].__setitem__(3, "café au lait"))
    [model] = write_triton_repo(safe, tmp_path / "repo", TritonOptions(kind="KIND_CPU"))  # non-ASCII text is fine
    assert (model / "labels.txt").read_text(encoding="utf-8").splitlines()[3] == "café au lait"


EVIL_TENSOR = 'images" } ] instance_group [ { kind: KIND_MODEL } ] input [ { name: "x'


def test_triton_writer_refuses_a_tensor_name_that_would_inject_config(tiny_artifacts: Path, tmp_path: Path) -> None:
    def edit(d: dict) -> None:
        d["graphs"]["pipeline"]["inputs"][0]["name"] = EVIL_TENSOR

    art = _tampered_artifact(tiny_artifacts, tmp_path, edit)
    with pytest.raises(AtldError, match=r"manifest\.json|tensor name") as e:
        write_triton_repo(art, tmp_path / "repo", TritonOptions(kind="KIND_CPU"))
    assert "\n" not in str(e.value) and EVIL_TENSOR in str(e.value)
    assert not (tmp_path / "repo").exists()


def test_config_pbtxt_refuses_a_tensor_name_with_a_quote(tiny_artifacts: Path) -> None:
    import dataclasses

    g = Manifest.load(tiny_artifacts).graphs["pipeline"]
    evil = dataclasses.replace(g, inputs=[dataclasses.replace(g.inputs[0], name=EVIL_TENSOR), *g.inputs[1:]])
    with pytest.raises(ConfigError, match=r"tensor name .* in the manifest entry of pipeline\.onnx contains a quote"):
        config_pbtxt("atld", "onnxruntime_onnx", evil, TritonOptions())
    config_pbtxt("atld", "onnxruntime_onnx", g, TritonOptions())  # the real names pass


# ---------------------------------------------------------------------------------- class names at train

@pytest.mark.parametrize("bad", ["seven\neight", 'say "hi"'], ids=["newline", "quote"])
def test_train_refuses_a_class_folder_name_triton_could_not_carry(tmp_path: Path, bad: str) -> None:
    from PIL import Image

    data = tmp_path / "data"
    for split in ("train", "test"):
        for c in ("ok", bad):
            (data / split / c).mkdir(parents=True)
            Image.new("RGB", (8, 8), (10, 200, 30)).save(data / split / c / "a.png")
    before = _tree(data)
    out = tmp_path / "run"
    done = _cli("train", "--dataset", "folder", "--data-dir", data, "--out", out, "--epochs", "1",
               "--arch", "wrn-10-1", "--image-size", "8", "--no-progress")  # tiny, should the check ever go
    _refused(done, f"class folder {bad!r} in {data / 'train'}", "rename the folder")
    assert _tree(data) == before
    assert not out.exists() or not any(out.iterdir())  # nothing trained or written
