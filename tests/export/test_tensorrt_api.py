"""TensorRT API conformance without a GPU: atld-deploy's TensorRT code against the real Python bindings.

`tensorrt-cu12-bindings` on PyPI is TensorRT's own pybind11 module (every class, enum, signature and
docstring); it only needs libnvinfer, libnvinfer_plugin and libnvonnxparser to load. Stand-ins for those,
compiled here with the C compiler, define the few C symbols the module imports (each returns NULL, so
nothing can actually be built), which is enough to import it and check every name the code uses against
the oldest supported 10.x, the newest 10.x and the newest 11.x on the index. Each version is imported in
its own subprocess, so the stand-ins never reach the other tests. Wheels are cached in ~/.cache.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from atld_deploy.export import trt_api

PACKAGE = "tensorrt-cu12-bindings"
ROOT = Path(__file__).resolve().parents[2]
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]

# The PyPI wheel installs the module as `tensorrt_bindings`; the `tensorrt` package that normally provides
# the name downloads from NVIDIA's index. This alias makes `import tensorrt` return the real module itself.
SHIM = "import sys\nimport tensorrt_bindings\n\nsys.modules[__name__] = tensorrt_bindings\n"


def _machine_lacks() -> str:
    tools = {"cc": "a C compiler (cc)", "readelf": "readelf (binutils)", "nm": "nm (binutils)"}
    missing = [what for tool, what in tools.items() if shutil.which(tool) is None]
    if missing:
        return "needs " + ", ".join(missing) + " to build the TensorRT loader stand-ins"
    if not sys.platform.startswith("linux"):
        return f"the TensorRT bindings wheels checked here are Linux-only, this is {sys.platform}"
    return ""


def _pick_versions() -> list[str]:
    """Oldest supported 10.x (pyproject: tensorrt>=10.0), newest 10.x, newest 11.x on the index."""
    try:
        out = subprocess.run([*PIP, "index", "versions", PACKAGE], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip(f"needs pip and PyPI: `pip index versions {PACKAGE}` timed out")
    m = re.search(r"Available versions:\s*(.+)", out.stdout)
    if out.returncode != 0 or not m:
        pytest.skip(f"needs pip and PyPI: `pip index versions {PACKAGE}` failed: {(out.stderr or out.stdout).strip()[-300:]}")
    found = sorted((Version(v.strip()) for v in m.group(1).split(",")), reverse=True)
    found = [v for v in found if not v.is_prerelease]
    tens = [v for v in found if v.major == 10]
    elevens = [v for v in found if v.major == 11]
    if not tens or not elevens:
        pytest.fail(f"the index lists no 10.x or no 11.x {PACKAGE}: {m.group(1)}")
    return list(dict.fromkeys(str(v) for v in (tens[-1], tens[0], elevens[0])))


def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~/.cache/atld-deploy/tensorrt-bindings (pytest's own cache is off in this project), else a temporary one."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "atld-deploy" / "tensorrt-bindings"
    try:
        base.mkdir(parents=True, exist_ok=True)
        return base
    except OSError:
        return tmp_path_factory.mktemp("tensorrt-bindings")


def _site(version: str, cache: Path, tmp: Path) -> Path:
    """The unpacked wheel of `version` (downloaded once, unpacked to a temporary name, then renamed)."""
    site = cache / version
    if (site / "tensorrt_bindings").is_dir():
        return site
    wheels = tmp / f"wheel-{version}"
    cmd = [*PIP, "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(wheels), f"{PACKAGE}=={version}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    found = list(wheels.glob("*.whl"))
    if out.returncode != 0 or not found:
        pytest.skip(f"needs a {PACKAGE} {version} wheel for this Python from PyPI: {out.stderr.strip()[-300:]}")
    part = cache / f".{version}.partial"
    shutil.rmtree(part, ignore_errors=True)  # a partial unpack of ours from an interrupted run
    with zipfile.ZipFile(found[0]) as z:
        z.extractall(part)
    try:
        os.replace(part, site)
    except OSError:  # another run unpacked the same version first
        shutil.rmtree(part, ignore_errors=True)
    return site


def _needed_libs(ext: Path) -> tuple[list[str], list[str]]:
    """The TensorRT sonames the extension links (its DT_NEEDED `libnv*` entries) and the C symbols it takes
    from them: undefined, unversioned, not Python's, and not already found in this process (libc's dlopen)."""
    dyn = subprocess.run(["readelf", "-d", str(ext)], capture_output=True, text=True, check=True).stdout
    libs = [n for n in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn) if n.startswith("libnv")]
    syms = subprocess.run(["nm", "-D", "--undefined-only", str(ext)], capture_output=True, text=True, check=True).stdout
    process = ctypes.CDLL(None)
    names = [m for m in re.findall(r"^\s*U (\S+)$", syms, re.M) if "@" not in m and not m.startswith(("Py", "_Py"))]
    return libs, sorted(n for n in names if not hasattr(process, n))


def _standins(libs: list[str], symbols: list[str], root: Path) -> Path:
    """A folder of stand-in libraries with those sonames, each defining `symbols` as functions returning NULL."""
    key = hashlib.sha256(json.dumps([libs, symbols]).encode()).hexdigest()[:12]
    out = root / f"standins-{key}"
    if out.is_dir():
        return out
    out.mkdir()
    src = out / "standin.c"
    src.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in symbols))
    for lib in libs:
        subprocess.run(["cc", "-shared", "-fPIC", "-o", str(out / lib), f"-Wl,-soname,{lib}", str(src)], check=True)
    return out


def _env(site: Path, libdir: Path, shim: Path) -> dict[str, str]:
    """A subprocess environment where `import tensorrt` finds the bindings of `site` and the libraries in `libdir`."""
    paths = os.pathsep.join(str(p) for p in (shim, site, ROOT))
    return dict(os.environ, PYTHONPATH=paths, LD_LIBRARY_PATH=str(libdir), PYTHONNOUSERSITE="1")


@pytest.fixture(scope="module")
def bindings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """version -> {'site': unpacked wheel, 'libs': stand-in folder, 'shim': folder with the `tensorrt` alias,
    'sonames': the stand-ins' names}."""
    lacks = _machine_lacks()
    if lacks:
        pytest.skip(lacks)
    versions = _pick_versions()
    cache = _cache_dir(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("trt-api")
    shim = tmp / "shim"
    (shim / "tensorrt").mkdir(parents=True)
    (shim / "tensorrt" / "__init__.py").write_text(SHIM)
    out = {}
    for v in versions:
        site = _site(v, cache, tmp)
        libs, symbols = _needed_libs(site / "tensorrt_bindings" / "tensorrt.so")
        out[v] = {"site": site, "libs": _standins(libs, symbols, tmp), "shim": shim, "sonames": libs}
    return out


# Deliberately wrong uses, each planted into a copy of the project's own source the way a real bug or API
# change would put it there: (id, file under atld_deploy/, [(old, new), ...], what the report must say).
MUTANTS = [
    ("renamed-enum-member", "runtime/trt_runner.py", [("trt.TensorIOMode.INPUT", "trt.TensorIOMode.INPUT_TENSOR")],
     "no attribute 'INPUT_TENSOR'"),
    ("removed-in-11", "export/trt.py",
     [("    flags = 0\n", "    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)\n")],
     "no attribute 'EXPLICIT_BATCH'"),
    ("guard-covers-only-its-own-function", "export/trt.py",
     [('hasattr(trt.BuilderFlag, "TF32")', 'hasattr(trt.BuilderFlag, "TF32") and hasattr(trt.BuilderFlag, "FP16")'),
      ('return {"tensorrt": trt.__version__,', 'return {"fp16": int(trt.BuilderFlag.FP16), "tensorrt": trt.__version__,')],
     "no attribute 'FP16'"),
    ("removed-in-10-method", "runtime/trt_runner.py", [("ctx.execute_async_v3(", "ctx.execute_async_v2(")],
     "no attribute 'execute_async_v2'"),
    ("removed-in-10-builder", "export/trt.py", [("builder.build_serialized_network(", "builder.build_engine(")],
     "no attribute 'build_engine'"),
    ("removed-in-10-property", "runtime/trt_runner.py", [("range(engine.num_io_tensors)", "range(engine.num_bindings)")],
     "no attribute 'num_bindings'"),
    ("keyword-renamed", "export/trt.py", [("cache is not None and config.set_timing_cache(cache, ignore_mismatch=",
                                           "cache is not None and config.set_timing_cache(cache, ignore_mismatches=")],
     "no parameter named 'ignore_mismatches'"),
    ("arguments-swapped", "export/trt.py", [("trt.OnnxParser(network, logger)", "trt.OnnxParser(logger, network)")],
     "argument 'network' must be a INetworkDefinition"),
    ("wrong-enum-passed", "export/trt.py", [("set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE",
                                             "set_memory_pool_limit(trt.BuilderFlag.TF32")],
     "argument 'pool' must be a MemoryPoolType"),
    ("too-many-arguments", "runtime/trt_runner.py", [("ctx.get_tensor_shape(name)", "ctx.get_tensor_shape(name, 0)")],
     "takes at most 1 positional argument(s), the code passes 2"),
    ("missing-argument", "export/trt.py", [(", (spec.max_batch, *rest))", ")")], "missing required argument(s) max"),
    ("property-called", "export/trt.py", [("range(parser.num_errors)", "range(parser.num_errors())")],
     "is a property, but the code calls it"),
    ("method-read-as-value", "runtime/trt_runner.py",
     [("engine.create_execution_context()", "engine.create_execution_context")], "is a method, but the code reads it"),
    ("removed-in-10-setter", "export/trt.py",
     [("config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mb << 20)",
       "config.max_workspace_size = spec.workspace_mb << 20")],
     "no attribute 'max_workspace_size'"),
    ("renamed-property-written", "export/trt.py", [("_LOGGER.min_severity =", "_LOGGER.severity =")],
     "no attribute 'severity'"),
    ("guarded-misspelling", "export/trt.py", [('"TF32")', '"TF_32")'), ("BuilderFlag.TF32)", "BuilderFlag.TF_32)")],
     "absent in every checked version"),
    ("dtype-table-misspelling", "runtime/trt_runner.py", [('"BF16": "bfloat16"', '"BFLOAT16": "bfloat16"')],
     "absent in every checked version"),
    ("name-the-scan-cannot-see", "runtime/trt_runner.py",
     [("in _TORCH_DTYPES.items():", "in sorted(_TORCH_DTYPES.items()):")], "a name the checker cannot resolve"),
]

# A source written wrong on purpose, one line per kind of mistake: (line, what the report must say).
PLANTED = [
    ("flags = 1 << int(trt.BuilderFlag.EXPLICIT_BATCH_OLD)", "no attribute 'EXPLICIT_BATCH_OLD'"),
    ("network = builder.create_netwrok(0)", "no attribute 'create_netwrok'"),
    ("builder.num_DLA_cores = 2", "num_DLA_cores is not a writable property"),
    ("builder.create_network(0, flags=0)", "'flags' is given twice"),
    ("builder.max_threads.bit_length()", "cannot tell which TensorRT type"),
]
PLANTED_SOURCE = "import tensorrt as trt\n\n\ndef build(logger):\n    builder = trt.Builder(logger)\n" + "".join(
    f"    {line}\n" for line, _ in PLANTED)


def _project_set(replace: dict[str, Path] | None = None) -> str:
    files = [(replace or {}).get(p.name, p) for p in trt_api.project_sources()]
    return os.pathsep.join(str(f) for f in files)


@pytest.fixture(scope="module")
def reports(bindings: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """'project', each mutant id and 'planted' -> {version: `trt_api.check` results}, one subprocess per version."""
    tmp = tmp_path_factory.mktemp("mutants")
    sets = {"project": _project_set()}
    for mid, rel, edits, _ in MUTANTS:
        src = (ROOT / "atld_deploy" / rel).read_text()
        for old, new in edits:
            assert src.count(old) == 1, f"mutant {mid}: {old!r} is no longer in {rel} exactly once; update the mutant"
            src = src.replace(old, new)
        (tmp / mid).mkdir()
        path = tmp / mid / Path(rel).name
        path.write_text(src)
        sets[mid] = _project_set({path.name: path})
    (tmp / "planted.py").write_text(PLANTED_SOURCE)
    sets["planted"] = str(tmp / "planted.py")
    run = f"import runpy, sys; sys.argv = ['trt_api', '--json', *{list(sets.values())!r}]; " \
          f"runpy.run_path({str(Path(trt_api.__file__))!r}, run_name='__main__')"
    out: dict[str, dict[str, Any]] = {name: {} for name in sets}
    for v, b in bindings.items():
        p = subprocess.run([sys.executable, "-c", run], env=_env(b["site"], b["libs"], b["shim"]), cwd=tmp,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        answer = json.loads(p.stdout)
        assert "import_error" not in answer, f"the {v} bindings did not import with the stand-ins: {answer}"
        assert answer["version"] == v
        for name, s in sets.items():
            out[name][v] = answer["results"][s]
    return out


def test_project_tensorrt_calls_match_every_checked_version(reports: dict[str, dict[str, Any]]) -> None:
    project = reports["project"]
    for v, results in project.items():
        absent = [r["text"] for r in results if r["status"] == "absent"]
        print(f"TensorRT {v}: {len(results)} uses checked; optional names absent here: {absent or 'none'}")
    assert trt_api.failures(project) == []
    any_version = next(iter(project.values()))
    texts = {r["text"] for r in any_version}
    # the scan must see the calls that build and run engines, or the check above would be vacuous
    assert {"builder.build_serialized_network(network, config)", "ctx.execute_async_v3(self._stream.cuda_stream)",
            "config.set_timing_cache(cache, ignore_mismatch=False)", "trt.OnnxParser(network, logger)"} <= texts
    assert all(r["status"] in ("ok", "absent") for rs in project.values() for r in rs)


@pytest.mark.parametrize("mid, expected", [(m[0], m[3]) for m in MUTANTS])
def test_checker_reports_each_planted_wrong_use(reports: dict[str, dict[str, Any]], mid: str, expected: str) -> None:
    found = trt_api.failures(reports[mid])
    assert found, f"mutant {mid} passed the conformance check"
    assert all(expected in line for line in found), found  # the planted use, and nothing else, is reported
    if mid in ("removed-in-11", "guard-covers-only-its-own-function"):  # still in 10.x: only 11.x may complain
        assert {line.split(":")[0] for line in found} == {f"TensorRT {v}" for v in reports[mid] if v.startswith("11.")}


def test_checker_reports_each_line_of_a_source_written_wrong(reports: dict[str, dict[str, Any]]) -> None:
    found = trt_api.failures(reports["planted"])
    versions = list(reports["planted"])
    for i, (line, says) in enumerate(PLANTED):
        hits = [f for f in found if f"planted.py:{i + 6} " in f and says in f]  # line 6 is the first planted one
        assert len(hits) == len(versions), (line, says, found)
    assert len(found) == len(PLANTED) * len(versions), found


def test_tensorrt_status_quotes_the_import_error_of_a_broken_install(
        bindings: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    v, b = next(iter(bindings.items()))
    dropped = next(n for n in b["sonames"] if "onnxparser" in n)
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in b["sonames"]:
        if name != dropped:
            (partial / name).symlink_to(b["libs"] / name)
    code = "from atld_deploy.export.trt import tensorrt_status; print(tensorrt_status())"
    procs = {
        label: subprocess.Popen([sys.executable, "-c", code], env=_env(b["site"], libs, b["shim"]), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for label, libs in (("complete", b["libs"]), ("broken", partial))
    }
    said = {}
    for label, p in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-2000:]
        said[label] = stdout.strip()
    assert "cannot be imported" in said["broken"] and dropped in said["broken"], said["broken"]
    assert "not installed" not in said["broken"]
    # with all three libraries the package imports, so the status moves on to the GPU (or is empty on one)
    assert "cannot be imported" not in said["complete"] and "not installed" not in said["complete"], said["complete"]
    assert said["complete"] == "" or "CUDA" in said["complete"], said["complete"]
    print(f"TensorRT {v} without {dropped}: {said['broken']}")
