"""What the installed `atld-deploy` script prints and returns for each kind of mistake, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path

import pytest

import atld_deploy

SCRIPT = Path(sysconfig.get_path("scripts")) / "atld-deploy"
# no colours, no wrapping: the messages below are matched as plain text
ENV = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
ENV.pop("FORCE_COLOR", None)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed script in `cwd`; a crash report it writes lands in `cwd` too (TMPDIR), not in /tmp."""
    assert SCRIPT.is_file(), f"{SCRIPT} is not installed: run `pip install --no-deps -e .` in this environment"
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env={**ENV, "TMPDIR": str(cwd)}, capture_output=True,
                          text=True, timeout=120)


def assert_usage_error(out: subprocess.CompletedProcess[str], usage: str, message: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    assert f"Usage: {usage}" in out.stderr, out.stderr
    assert message in out.stderr, out.stderr


@pytest.mark.parametrize(
    ("args", "usage", "message"),
    [
        (["train", "--bogus"], "atld-deploy train", "No such option: --bogus"),
        (["infer"], "atld-deploy infer", "Missing argument"),
        (["train", "--out", "x", "--epochs", "abc"], "atld-deploy train", "Invalid value for '--epochs'"),
        (["bogus"], "atld-deploy [OPTIONS] COMMAND", "No such command 'bogus'"),
    ],
    ids=["unknown-option", "missing-argument", "bad-value-type", "unknown-command"],
)
def test_usage_errors_print_usage_and_exit_2_without_writing(
    tmp_path: Path, args: list[str], usage: str, message: str
) -> None:
    out = run_cli(*args, cwd=tmp_path)
    assert_usage_error(out, usage, message)
    assert list(tmp_path.iterdir()) == []  # refused at parse time: not even `--out x` was created


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    out = run_cli("--version", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"atld-deploy {atld_deploy.__version__}\n"
    assert atld_deploy.__version__ == version("atld-deploy")  # the one source pyproject reads


def test_user_error_is_one_line_with_its_exit_code(tmp_path: Path) -> None:
    out = run_cli("verify", str(tmp_path / "missing"), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert list(tmp_path.iterdir()) == []
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "missing" in lines[0]


# A command that fails the way a bug does, registered on the real app in a child process and run through the
# real entry point (no atld-deploy command raises a plain RuntimeError on purpose).
BUG = """
import sys
from atld_deploy.cli import app, main

@app.command("crash")
def crash() -> None:
    raise RuntimeError("state went wrong\\nsecond line of detail")

sys.exit(main(sys.argv[1:]))
"""


def run_bug(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**ENV, "TMPDIR": str(tmp_path)}  # where tempfile.gettempdir() points, so the report lands here
    return subprocess.run([sys.executable, "-c", BUG, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_internal_error_is_one_line_naming_the_traceback_file(tmp_path: Path) -> None:
    out = run_bug("crash", tmp_path=tmp_path)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert lines[0].startswith("error: internal error in atld-deploy (RuntimeError: state went wrong)"), lines[0]
    assert "--verbose" in lines[0]
    reports = sorted(tmp_path.glob("atld-deploy-traceback-*.txt"))
    assert len(reports) == 1 and str(reports[0]) in lines[0], (reports, lines[0])
    report = reports[0].read_text()
    assert "Traceback (most recent call last)" in report and "second line of detail" in report
    assert "argv: ['crash']" in report


def test_internal_error_with_verbose_prints_the_traceback(tmp_path: Path) -> None:
    out = run_bug("--verbose", "crash", tmp_path=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "Traceback (most recent call last)" in out.stderr
    assert "RuntimeError: state went wrong" in out.stderr
    assert list(tmp_path.glob("atld-deploy-traceback-*.txt")) == []  # shown, so not also written
