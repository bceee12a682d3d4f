"""`--executor ray` without a cluster: `plan_pool`'s defaults never take the CPU that Ray Data's read and write
tasks need, and an install without the extra gets one line naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from atld_deploy.errors import ConfigError
from atld_deploy.runtime.ray_data import Pool, plan_pool


@pytest.mark.parametrize(("free", "device", "expected"), [
    ({"CPU": 2.0}, "auto", Pool(1, 1.0, 0.0)),             # this machine: one actor, one CPU left for the reads
    ({"CPU": 16.0}, "auto", Pool(15, 1.0, 0.0)),
    ({"CPU": 1.0}, "auto", Pool(1, 0.0, 0.0)),             # one CPU: the actor reserves none of it
    ({"CPU": 16.0, "GPU": 4.0}, "auto", Pool(4, 1.0, 1.0)),  # one actor per GPU
    ({"CPU": 2.0, "GPU": 2.0}, "auto", Pool(2, 0.5, 1.0)),   # too few CPUs for one each: a share
    ({"CPU": 16.0, "GPU": 4.0}, "cpu", Pool(15, 1.0, 0.0)),  # --device cpu leaves the GPUs alone
])
def test_defaults_leave_the_reads_a_cpu(free: dict[str, float], device: str, expected: Pool) -> None:
    pool = plan_pool(free, device)
    assert pool == expected
    assert pool.actors * pool.cpus <= free["CPU"] - 1 or pool.cpus == 0


def test_fractional_gpus_put_several_actors_on_one() -> None:
    assert plan_pool({"CPU": 8.0, "GPU": 1.0}, gpus_per_actor=0.25) == Pool(4, 1.0, 0.25)


def test_the_pool_that_hung_is_refused_with_what_to_do() -> None:
    # two one-CPU actors on two CPUs: the reads never get a CPU and the job never ends
    with pytest.raises(ConfigError, match=r"2 actor\(s\) x 1 CPU take 2 of the cluster's 2 free CPUs.*lower"):
        plan_pool({"CPU": 2.0}, actors=2, cpus_per_actor=1)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"actors": 0}, "--ray-actors must be at least 1, got 0"),
    ({"cpus_per_actor": -1.0}, "--ray-cpus-per-actor must be 0 or more, got -1"),
    ({"gpus_per_actor": 1.0}, "--ray-gpus-per-actor 1 but the cluster has 0 free GPU"),
    ({"actors": 3, "gpus_per_actor": 0.5}, r"3 actor\(s\) x 0.5 GPU need 1.5 GPUs, the cluster has 1 free"),
])
def test_impossible_pools_are_refused(kwargs: dict, message: str) -> None:
    free = {"CPU": 8.0, "GPU": 1.0} if "gpus_per_actor" in kwargs and kwargs.get("actors") else {"CPU": 8.0}
    with pytest.raises(ConfigError, match=message):
        plan_pool(free, **kwargs)


def test_without_ray_one_line_names_the_extra_and_nothing_is_written(tmp_path: Path) -> None:
    # a real CLI run in a process where `import ray` fails, as on an install without the extra
    (tmp_path / "images").mkdir()
    out = tmp_path / "preds.jsonl"
    code = ("import sys; sys.modules['ray'] = None; from atld_deploy.cli import main; "
            f"sys.exit(main(['infer', {str(tmp_path / 'images')!r}, '-a', {str(tmp_path / 'art')!r}, "
            f"'-o', {str(out)!r}, '--executor', 'ray', '--no-progress']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'atld-deploy[ray]'" in lines[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


def test_an_unknown_executor_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from atld_deploy.cli import main

    (tmp_path / "images").mkdir()
    assert main(["infer", str(tmp_path / "images"), "-a", str(tmp_path), "-o", str(tmp_path / "p.jsonl"),
                 "--executor", "dask"]) == 2
    assert capsys.readouterr().err == "error: --executor must be local or ray, got 'dask'\n"


def test_a_missing_or_repeated_file_in_rays_rows_is_an_error() -> None:
    from atld_deploy.errors import EngineError
    from atld_deploy.runtime.ray_data import check_complete

    check_complete(["b.png", "a.png"], ["a.png", "b.png"], Path("p.jsonl"))  # order is not completeness
    with pytest.raises(EngineError, match=r"2 rows for 2 files \(1 missing, e.g. \['b.png'\]; 1 repeated, e.g. "
                                          r"\['a.png'\]\): p.jsonl was not written"):
        check_complete(["a.png", "a.png"], ["a.png", "b.png"], Path("p.jsonl"))
