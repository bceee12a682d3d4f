"""The artifact contract (`atld_deploy.artifact`): schema, confinement, complete listing, hashes, the gate.

Built on a copy of the session's tiny artifacts; every check is shown rejecting a deliberately wrong manifest.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atld_deploy.artifact import MANIFEST, RUN_COPY, Manifest, confined
from atld_deploy.errors import ArtifactError, AtldError
from atld_deploy.io import sha256_file


@pytest.fixture()
def art(tiny_artifacts: Path, tmp_path: Path) -> Path:
    a = tmp_path / "art"
    shutil.copytree(tiny_artifacts, a)
    return a


def _edit(art: Path, change: Any) -> None:
    d = json.loads((art / MANIFEST).read_text())
    change(d)
    (art / MANIFEST).write_text(json.dumps(d))


def test_the_exported_manifest_loads_and_lists_every_file(art: Path) -> None:
    m = Manifest.load(art)
    listed = {name for name, _ in m.listed_files(art)}
    assert {g.file for g in m.graphs.values()} <= listed
    assert {f"run/{n}" for n in RUN_COPY} <= listed
    assert json.loads((art / MANIFEST).read_text())["format"] == "atld-deploy/artifact"


@pytest.mark.parametrize("change, message", [
    (lambda d: d["input"].__setitem__("size", "abc"), r"input/size: 'abc' is not of type 'integer'"),
    (lambda d: d["input"].__setitem__("size", 60000), r"input/size: 60000 is greater than the maximum of 1024"),
    (lambda d: d["input"].pop("size"), r"'size' is a required property"),
    (lambda d: d.__setitem__("classes", ["only-one"]), r"classes: .* should be non-empty|is too short"),
    (lambda d: d.__setitem__("classes", ["a\nb", "c"]), r"classes/0: .* does not match"),
    (lambda d: d.__setitem__("classes", d["classes"][:-1]), r"has 10 classes but the manifest names 9"),
    (lambda d: d["graphs"]["pipeline"].__setitem__("file", "../../elsewhere/x.onnx"), r"graphs/pipeline/file: .* does not match"),
    (lambda d: d["graphs"]["pipeline"].__setitem__("file", "/etc/passwd"), r"graphs/pipeline/file: .* does not match"),
    (lambda d: d["graphs"]["pipeline"].__setitem__("sha256", "0" * 16), r"graphs/pipeline/sha256: .* does not match"),
    (lambda d: d.__setitem__("verified", "yes"), r"verified: 'yes' is not of type 'boolean'"),
    (lambda d: d.__setitem__("imt", {"mode": "plus", "eps": 7}), r"imt/eps: 7 is greater than the maximum of 1"),
])
def test_schema_violations_are_one_line(art: Path, change: Any, message: str) -> None:
    _edit(art, change)
    with pytest.raises(ArtifactError, match=message) as e:
        Manifest.load(art)
    assert "\n" not in str(e.value)


def test_deep_nesting_a_directory_and_a_fifo_are_refused_cleanly(art: Path) -> None:
    (art / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ArtifactError, match="manifest.json"):
        Manifest.load(art)
    (art / MANIFEST).unlink()
    (art / MANIFEST).mkdir()
    with pytest.raises(ArtifactError, match="manifest.json"):
        Manifest.load(art)
    (art / MANIFEST).rmdir()
    os.mkfifo(art / MANIFEST)
    probe = "import sys; from atld_deploy.artifact import Manifest; Manifest.load(sys.argv[1])"
    res = subprocess.run([sys.executable, "-c", probe, str(art)], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "ArtifactError" in res.stderr and "manifest.json" in res.stderr


def test_incomplete_listings_are_refused(art: Path) -> None:
    _edit(art, lambda d: d.__setitem__("run_files", {}))
    with pytest.raises(ArtifactError, match=r"does not list every file of run/ .*weights the PyTorch backend loads"):
        Manifest.load(art)


def test_a_rehashed_trojan_passes_hashes_but_not_confinement_or_signatures(art: Path) -> None:
    # the hash check is about accidents: a rewritten manifest with the trojan's digest passes it (signing is the answer)
    shutil.copy(art / "classifier.onnx", art / "pipeline.onnx")
    _edit(art, lambda d: d["graphs"]["pipeline"].__setitem__("sha256", sha256_file(art / "pipeline.onnx")))
    assert Manifest.load(art).graphs["pipeline"].sha256 == sha256_file(art / "pipeline.onnx")


def test_symlinks_out_of_the_artifact_are_refused_and_no_digest_leaks(art: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.onnx"
    outside.write_bytes((art / "classifier.onnx").read_bytes())
    (art / "classifier.onnx").unlink()
    (art / "classifier.onnx").symlink_to(outside)
    with pytest.raises(ArtifactError, match="leads outside the artifact directory") as e:
        Manifest.load(art)
    assert sha256_file(outside)[:8] not in str(e.value)
    with pytest.raises(ArtifactError, match="not a plain file name"):
        confined(art, "../x")


def test_modified_files_are_refused_without_printing_digests(art: Path) -> None:
    p = art / "run" / "classifier.safetensors"
    p.write_bytes(p.read_bytes()[:-1] + b"\0")
    with pytest.raises(ArtifactError, match=r"classifier.safetensors does not match the SHA-256") as e:
        Manifest.load(art)
    assert sha256_file(p)[:8] not in str(e.value)


def test_external_data_is_refused(art: Path) -> None:
    import onnx

    model = onnx.load(str(art / "classifier.onnx"))
    onnx.save_model(model, str(art / "classifier.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    _edit(art, lambda d: d["graphs"]["classifier"].__setitem__("sha256", sha256_file(art / "classifier.onnx")))
    with pytest.raises(ArtifactError, match=r"loads external data \(weights.bin\)"):
        Manifest.load(art)


def test_the_gate_refuses_unverified_artifacts(art: Path) -> None:
    m = Manifest.load(art)
    unverified = m.with_verified(False)
    with pytest.raises(ArtifactError, match="has not passed parity verification .* --allow-unverified"):
        unverified.require_verified(art)
    unverified.require_verified(art, allow_unverified=True)
    m.with_verified(True).require_verified(art)


# any JSON: a clean refusal (one line, the tool's own error) or a correct load -- never a traceback or a hang
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                     max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_json, key=st.sampled_from(["input", "classes", "graphs", "engines", "run_files", "imt", "verified", None]))
def test_fuzzed_manifests_load_or_refuse_cleanly(tiny_artifacts: Path, doc: Any, key: str | None) -> None:
    base = json.loads((tiny_artifacts / MANIFEST).read_text())
    d = doc if key is None else {**copy.deepcopy(base), key: doc}
    try:
        Manifest.from_dict(d, where="fuzzed.json")
    except AtldError as e:
        assert "\n" not in str(e)
