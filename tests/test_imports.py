"""Data flows one way: ``mec_env`` (the model and the environments) imports nothing of the
layers built on it (``baselines``, ``agents``, ``train``), and no two of its modules import
each other, even lazily inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import mec_env

PACKAGE = Path(mec_env.__file__).parent
UPPER_LAYERS = ("baselines", "agents", "train")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function (relative imports resolved)."""
    out: set[str] = set()
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)  # "from mec_env import kernels"
    return out


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def test_mec_env_never_imports_the_layers_above_it():
    upward = sorted(f"{module_name(p)} imports {m}" for p in PACKAGE.rglob("*.py") for m in imports_of(p)
                    if m.split(".")[0] in UPPER_LAYERS)
    assert not upward, upward


def test_the_modules_of_mec_env_import_each_other_without_a_cycle():
    edges = graph()
    # a package's __init__ re-exports its modules; only module -> module edges can form a real cycle
    edges = {k: {m for m in v if not edges.get(m) or not PACKAGE.joinpath(*m.split(".")[1:], "__init__.py").exists()}
             for k, v in edges.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend(path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, path + [node]):
                return True
        state[node] = 2
        return False

    for start in sorted(edges):
        if state.get(start) is None and visit(start, []):
            break
    assert not cycle, " -> ".join(cycle)


def test_the_import_walk_sees_a_lazy_import_inside_a_function():
    probe = PACKAGE / "envs" / "common.py"
    assert "mec_env.envs.render" in imports_of(probe)  # matplotlib's renderer is imported on first use
