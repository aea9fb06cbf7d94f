"""The package works installed as a wheel, from any directory: what it reads at run time
(scenario and training configs, trace table, manifest, prompt sizes) is package data.

Slow (about half a minute: a wheel build and a venv); ``make test-slow`` and ``.ci/run`` run it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "mec_env", "baselines", "agents")

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import gymnasium
    import mec_env
    assert Path(mec_env.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), mec_env.__file__
    # the deps path line did not run the checkout's editable-install hook (a .pth in that directory)
    assert not [m for m in sys.modules if m.startswith("__editable__")], sorted(sys.modules)
    env = gymnasium.make("mec_env:MECOffload-v0")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    from mec_env import load_scenario
    assert load_scenario("paper").n_users == 120 and load_scenario("small").n_users == 8
    from agents.training import PPOConfig, load_config
    assert load_config(PPOConfig, "ppo").env_id == "MECOffload-v0"
    from baselines.experiments import Point, monte_carlo, summarize
    rows = monte_carlo(load_scenario("paper"), [Point(20, 0.6)], strategies=["GOA", "Local all"], runs=5,
                       workers=1, progress=False)
    summary = {r["strategy"]: r for r in summarize(rows)}
    print("installed at", mec_env.__file__)
    print("step reward", reward, "GOA delay ms", summary["GOA"]["delay_ms_mean"], "runs", summary["GOA"]["runs"])
""")


@pytest.mark.slow
def test_the_wheel_installs_and_runs_from_another_directory(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:  # a copy, so the build leaves nothing in the checkout
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, source / name)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(dist), str(source)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("mecoffload-*.whl"))

    # a fresh venv without the source tree: the dependencies come from this venv's site-packages through
    # a .pth path line, which does not run the .pth files there (the editable install stays invisible)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True, capture_output=True, timeout=300)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run([str(python), "-c", SCRIPT], cwd=elsewhere, capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"installed at {Path(purelib).resolve()}" in out.stdout or "installed at " + purelib in out.stdout
    assert "runs 5" in out.stdout
