"""`python -m scripts.explore --dask ADDRESS` against a real Dask cluster: a `dask scheduler`
and a `dask worker` started as separate processes on 127.0.0.1 (the worker in another working
directory, so it imports the tasks' functions as a worker on another machine would), a small
cycle-model sweep through them, results equal to the same sweep on the local process pool.

Before the fix the command failed here: the tasks were pickled as `__main__.workload_model`
(the module ran as `__main__`), which the scheduler cannot import."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DASK = Path(sys.executable).parent / "dask"
SWEEP = ["--no-synth", "--rows", "2", "4", "--cols", "4", "--lanes", "4",
         "--workloads", "spikformer_iand", "sdt"]


def wait_for(path: Path, process, seconds: float = 60):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if path.exists() and path.stat().st_size:
            return json.loads(path.read_text())
        assert process.poll() is None, "the Dask process exited"
        time.sleep(0.2)
    raise TimeoutError(f"{path} did not appear")


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and one single-threaded worker process; yields the scheduler's address."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), DASK_DISTRIBUTED__WORKER__DAEMON="False")
    info = tmp_path / "scheduler.json"
    logs = [open(tmp_path / f"{name}.log", "w") for name in ("scheduler", "worker")]
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(info)],
                              cwd=tmp_path, env=env, stdout=logs[0], stderr=subprocess.STDOUT)]
    try:
        address = wait_for(info, procs[0])["address"]
        procs.append(subprocess.Popen([str(DASK), "worker", address, "--nworkers", "1",
                                       "--nthreads", "1", "--no-dashboard", "--host",
                                       "127.0.0.1"],
                                      cwd=tmp_path, env=env, stdout=logs[1],
                                      stderr=subprocess.STDOUT))
        yield address, tmp_path
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()


def explore(out: str, *extra) -> list:
    run = subprocess.run([sys.executable, "-m", "scripts.explore", *SWEEP, "--out", out,
                          *extra], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads((ROOT / out / "results.json").read_text())["rows"]


def test_sweep_on_a_dask_cluster_equals_the_local_sweep(cluster):
    address, tmp = cluster
    name = f"build/test-explore-dask-{os.getpid()}"
    try:
        local = explore(f"{name}/local", "--jobs", "1")
        remote = explore(f"{name}/dask", "--dask", address)
        assert remote == local
        assert len(local) == 4 and all(r["cycles"] for r in local)
        log = (tmp / "worker.log").read_text()
        assert "Exception" not in log and "Error" not in log, log[-2000:]
    finally:
        shutil.rmtree(ROOT / name, ignore_errors=True)


def test_a_main_module_function_is_refused_before_it_reaches_dask():
    from scripts import explore as module

    def evaluate(task):
        return task

    evaluate.__module__ = "__main__"
    with pytest.raises(ValueError, match="cannot import"):
        module.run_tasks(evaluate, [{}], 1, "tcp://127.0.0.1:1", "points")
