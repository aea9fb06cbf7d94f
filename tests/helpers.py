"""Test helpers: hand-built problems, bAbI subsets, the train/ scripts as modules, pickles that must not run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from mec_env.problem import Problem


ROOT = Path(__file__).resolve().parent.parent
BABI = Path(__file__).resolve().parent / "fixtures" / "babi"  # excerpts shipped with the tests (README there)


def babi_subset(root: Path, stories: int = 40) -> Path:
    """The first ``stories`` stories of bAbI qa1 train, as a bAbI folder of its own."""
    src = BABI / "en" / "qa1_single-supporting-fact_train.txt"
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)[:15 * stories]
    (root / "babi").mkdir(parents=True)
    (root / "babi" / "qa1_single-supporting-fact_train.txt").write_text("".join(lines), encoding="utf-8")
    return root / "babi"


def tiny_problem(interference: str = "physical", **changes) -> Problem:
    """Two users, two ESs, round numbers so every delay can be computed by hand."""
    fields = dict(
        gain=np.array([[3.0, 1.0], [0.5, 7.0]]),
        local_capacity=np.array([1e9, 2e9]),
        es_capacity=np.array([2e9, 4e9]),
        query_bits=np.array([1e3, 2e3]),
        workload_slm=np.array([1e8, 1e8]),
        workload_llm=np.array([1e9, 1e9]),
        alpha=np.array([0.9, 0.3]),
        slm_correct=np.array([False, True]),
        llm_correct=np.array([True, True]),
        c_max=3e9,
        bandwidth_hz=1e6,
        tx_power_w=1.0,
        noise_power_w=1.0,
        tau=0.6,
        interference=interference,
    )
    fields.update(changes)
    return Problem(**fields)


def train_script(name: str) -> ModuleType:
    """``train/{name}.py`` loaded as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"train_{name}", ROOT / "train" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class OpensMarker:
    """Unpickling this calls ``open(marker, "w")``: the file appears iff the pickle was run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def payload_pickle(marker: Path) -> bytes:
    """A pickle that creates the file ``marker`` when it is unpickled: the file appears iff the pickle was run."""
    import pickle

    return pickle.dumps(OpensMarker(marker))
