"""``python -m baselines.compile_kernels`` (run by ``make test`` first) compiles every kernel of the package: a kernel
it missed would be compiled by whichever test worker met it first."""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

from baselines import compile_kernels
from mec_env import kernels

ROOT = Path(__file__).resolve().parent.parent


def _dispatchers() -> dict[str, object]:
    found = {}
    for package in ("mec_env", "baselines"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if info.name.startswith(("mec_env.lm.", "mec_env.multiagent")):
                continue  # extras, without kernels
            module = importlib.import_module(info.name)
            for attr, obj in vars(module).items():
                if getattr(obj, "py_func", None) is not None and obj.__module__ == info.name:
                    found[f"{info.name}.{attr}"] = obj
    return found


@pytest.mark.slow  # about 20 s: compiles every kernel into an empty cache (make test-slow, CI)
def test_the_groups_compile_every_kernel_of_the_package(tmp_path):
    if not kernels.numba_enabled():
        pytest.skip("numba is off (MECOFFLOAD_NUMBA=0): nothing to compile")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-m", "baselines.compile_kernels"], env=env, check=True, cwd=ROOT, timeout=300)
    # numba names a cache index after the module's last part, the function and its line
    cached = {re.sub(r"-\d+\.py\d+\.nbi$", "", p.name) for p in tmp_path.rglob("*.nbi")}
    kernels_found = {f"{name.split('.')[-2]}.{name.split('.')[-1]}" for name in _dispatchers()}
    assert kernels_found - cached == set(), "compile_kernels never reaches these: add them to a part of its GROUPS"


def test_each_part_is_in_one_group():
    parts = [part for group in compile_kernels.GROUPS.values() for part in group]
    assert sorted(parts) == sorted(compile_kernels.PARTS)


def test_a_bad_argument_is_the_usage_line():
    with pytest.raises(SystemExit, match="usage: python -m baselines.compile_kernels"):
        compile_kernels.main(["--group", "everything"])
