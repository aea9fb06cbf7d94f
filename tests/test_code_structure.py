"""The structure the core keeps: compiled kernels with few, grouped parameters; scripts that are
importable code; modules small enough to read; one definition of each shared concept."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mec_env", "baselines", "agents")
MAX_KERNEL_PARAMETERS = 12
MAX_MODULE_LINES = 500


def _modules(package: str):
    pkg = importlib.import_module(package)
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        yield info.name


def _source_files():
    for package in PACKAGES:
        yield from (ROOT / package).rglob("*.py")


def test_no_compiled_kernel_takes_more_than_twelve_parameters():
    pytest.importorskip("numba")
    too_many = {}
    for package in ("mec_env", "baselines"):
        for name in _modules(package):
            if name.startswith(("mec_env.lm.", "mec_env.multiagent")):
                continue  # the LM tooling and PettingZoo are extras, and hold no kernels
            module = importlib.import_module(name)
            for attr, obj in vars(module).items():
                fn = getattr(obj, "py_func", None)  # a numba dispatcher
                if fn is not None and obj.__module__ == name:
                    count = len(inspect.signature(fn).parameters)
                    if count > MAX_KERNEL_PARAMETERS:
                        too_many[f"{name}.{attr}"] = count
    assert not too_many, f"compiled functions over {MAX_KERNEL_PARAMETERS} parameters: {too_many}"


def test_every_module_is_at_most_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in _source_files()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_scripts_edit_no_sys_path_and_the_bench_imports_no_test_module():
    offenders = [str(p.relative_to(ROOT)) for folder in ("train", "bench", "examples")
                 for p in (ROOT / folder).glob("*.py")
                 if re.search(r"sys\.path\s*(\.|\[|=)", p.read_text())]
    assert not offenders, f"sys.path edited in {offenders}"
    bench = (ROOT / "bench" / "bench.py").read_text()
    assert not re.search(r"^\s*(from|import)\s+(tests|helpers|test_)", bench, re.M)


@pytest.mark.parametrize("definition", [
    r"^INTERFERENCE_MODELS\s*=",  # the interference models
    r"^class FlatLayout\b",  # the flat observation layout
    r"^class RestrictedUnpickler\b",  # the one unpickler
    r"^def safe_custom_objects\b",  # the one model-zip loader's rebuild
    r"^def build_ppo\b",  # the one PPO builder
])
def test_each_shared_concept_is_defined_once(definition):
    hits = [str(p.relative_to(ROOT)) for p in _source_files() if re.search(definition, p.read_text(), re.M)]
    assert len(hits) == 1, f"{definition!r} defined in {hits}"


@pytest.mark.xdist_group("structure")
def test_xdist_group_marks_take_effect(request):
    """``make test`` pins each Ray runtime and each compiled queue kernel to one worker with ``xdist_group``; a
    pytest that ignores the group suffix pytest-xdist writes into the node id would silently undo that."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run by pytest-xdist with --dist loadgroup")
    assert request.node.nodeid.endswith("@structure"), request.node.nodeid
