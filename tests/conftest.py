"""Fixtures shared by the test modules. Helper functions (tiny models, scripts loaded as modules, pickles that
record whether they ran) live in ``helpers.py``."""

from __future__ import annotations

import os

import pytest

# Two test workers share the two cores: torch (and the scripts the tests start, which inherit this) runs one
# OpenMP thread each, never two per worker spinning against the other worker's
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def ray_runtime():
    """A local Ray runtime of this test process, never a cluster that runs on this machine, for one module.

    The modules that use it carry ``pytest.mark.xdist_group("ray")``: with ``--dist loadgroup`` they run on one
    worker, one after the other, so no two runtimes start side by side on the two cores."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def child_processes():
    """The ``subprocess.Popen`` objects a test appends here are killed if still running when it ends: a training
    started with a budget it never reaches, for a signal to stop it, must not outlive a test that failed first."""
    procs = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
