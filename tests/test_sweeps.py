"""train/reproduce.py under faults: bad arguments, a SIGKILL mid-sweep (no orphans, an exact resume)."""

from __future__ import annotations

import csv
import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import baselines.experiments as ex
from mec_env.config import load_scenario

ROOT = Path(__file__).resolve().parent.parent
REPRODUCE = [sys.executable, str(ROOT / "train" / "reproduce.py")]


@pytest.mark.parametrize("args, field", [(["fig4", "--taus", "1.5"], "'tau'"), (["fig4", "--taus", "nan"], "'tau'"),
                                         (["fig3", "--n", "8", "0"], "'n_users'"), (["gap", "--n", "0"], "'n_users'"),
                                         (["gap", "--n", "6", "14"], "exhaustive search")])
def test_a_bad_sweep_point_is_refused_before_the_pool_starts(tmp_path, args, field):
    t0 = time.perf_counter()
    res = subprocess.run([*REPRODUCE, *args, "--runs", "3", "--workers", "2", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert field in res.stderr and "error:" in res.stderr
    assert "Traceback" not in res.stderr and "BrokenProcessPool" not in res.stderr
    assert not list(tmp_path.iterdir())  # no draw was run
    assert time.perf_counter() - t0 < 30


def test_gap_resumes_from_its_partial_file_and_only_with_the_same_settings(tmp_path, monkeypatch):
    cfg = load_scenario("paper")
    partial = tmp_path / ".gap.partial.jsonl"
    strip = lambda rows: [{k: v for k, v in r.items() if "runtime" not in k} for r in rows]  # noqa: E731
    full = ex.optimality_gaps(cfg, [4, 5], runs=4, progress=False)
    ex.optimality_gaps(cfg, [4, 5], runs=4, progress=False, partial=partial)
    text = partial.read_text()
    partial.write_text(text[:len(text) // 2])  # killed mid-sweep: some draws and a torn last line

    calls = []
    original = ex.gap_draw

    def counting(*args):
        calls.append(args[1:])
        return original(*args)

    monkeypatch.setattr(ex, "gap_draw", counting)
    assert strip(ex.optimality_gaps(cfg, [4, 5], runs=4, progress=False, partial=partial)) == strip(full)
    assert 0 < len(calls) < 16  # only the draws the partial file did not hold
    calls.clear()
    ex.optimality_gaps(cfg.replace(tau=0.5), [4, 5], runs=4, progress=False, partial=partial)
    assert len(calls) == 16  # another scenario: nothing reused
    calls.clear()
    ex.optimality_gaps(cfg.replace(tau=0.5), [4, 5], runs=4, seed0=7, progress=False, partial=partial)
    assert len(calls) == 16 and {c[2] for c in calls} == set(range(7, 11))  # other seeds: nothing reused


def _pdeathsig() -> int:
    value = ctypes.c_int(-1)
    ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0)  # PR_GET_PDEATHSIG
    return value.value


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_pool_workers_get_sigkill_when_their_parent_dies():
    with ex.worker_pool(2) as pool:
        assert pool.submit(_pdeathsig).result() == signal.SIGKILL
    # a worker whose parent is already gone (here: a pid not its parent's) exits at once
    child = multiprocessing.get_context("fork").Process(target=ex._die_with_parent, args=(1, "fork"))
    child.start()
    child.join(10)
    assert child.exitcode == 1


def _processes() -> list[tuple[int, int, str, str]]:
    """(pid, parent pid, state, command line) of every live process."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
        out.append((int(d.name), int(ppid), state, cmdline))
    return out


def _result(path: Path) -> list[dict]:
    """The CSV's rows without its run-time columns (the only ones that vary from run to run)."""
    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if "runtime" not in k} for r in csv.DictReader(fh)]


def _partial_rows(out: Path) -> int:
    return sum(max(0, p.read_text().count("\n") - 1) for p in out.glob(".*.partial.jsonl"))


# every sweep kind that runs in the pool or resumes; about 2 s of draws each at 2 workers
SWEEPS = {
    "fig3": ["--runs", "300", "--n", "60", "90", "120"],
    "fig4": ["--runs", "400", "--n", "60", "120", "--taus", "0.6", "0.8", "1.0"],
    "fig5": ["--runs", "150", "--n", "60", "120"],
    "gap": ["--runs", "4", "--n", "6", "7", "8", "9"],
}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; workers die with their parent on Linux")
@pytest.mark.parametrize("figure", list(SWEEPS))
def test_a_killed_sweep_leaves_no_orphans_and_resumes_to_the_same_result(tmp_path, figure, child_processes):
    def cmd(out: Path) -> list[str]:
        return [*REPRODUCE, figure, *SWEEPS[figure], "--workers", "2", "--out", str(out)]

    ref, out = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(cmd(ref), check=True, capture_output=True, timeout=300)

    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen(cmd(out), stdout=log, stderr=log)
        child_processes.append(proc)
        deadline, workers = time.monotonic() + 120, []
        while proc.poll() is None and time.monotonic() < deadline:  # until draws are kept and workers run
            if _partial_rows(out) >= 1:
                workers = [p for p, ppid, state, _ in _processes() if ppid == proc.pid and state != "Z"]
                if workers:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, "the sweep ended before it could be killed: make it longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert workers, "the sweep ran no worker processes"
    assert not (out / f"{figure}.csv").exists() and _partial_rows(out) >= 1  # killed mid-sweep

    deadline = time.monotonic() + 2
    while True:  # zombies are dead (they hold nothing) and wait for pid 1 to reap them
        orphans = [(p, c) for p, ppid, state, c in _processes()
                   if state != "Z" and (ppid == proc.pid or p in workers or str(out) in c)]
        if not orphans or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for p, _ in orphans:  # leave no process behind even when the test fails
        os.kill(p, signal.SIGKILL)
    assert not orphans, f"processes outlived the killed sweep: {orphans}"

    subprocess.run(cmd(out), check=True, capture_output=True, timeout=300)
    assert _result(out / f"{figure}.csv") == _result(ref / f"{figure}.csv")
    assert not list(out.glob(".*.partial.jsonl"))


def _default_sigint() -> None:
    # a job started in the background without job control (``cmd &`` in a script, nohup) inherits
    # SIGINT ignored, and Python then keeps ignoring it: give the child a terminal's Ctrl-C
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_end_the_pool_and_keep_the_partial_file(tmp_path, sig, status, child_processes):
    out = tmp_path / "out"
    # 10x the fig3 draws of SWEEPS (about 10 s): the signal must find the sweep running (stopped, it costs ~1 s)
    proc = subprocess.Popen([*REPRODUCE, "fig3", "--runs", "3000", "--n", "60", "90", "120", "--workers", "2",
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    child_processes.append(proc)
    deadline, workers = time.monotonic() + 120, []
    while proc.poll() is None and not workers and time.monotonic() < deadline:
        if _partial_rows(out) >= 1:
            workers = [p for p, ppid, state, _ in _processes() if ppid == proc.pid and state != "Z"]
        time.sleep(0.02)
    assert workers, "the sweep ended before it could be stopped: make it longer"
    proc.send_signal(sig)  # the parent alone: its workers ignore Ctrl-C and are ended by it
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == status, err
    assert "Traceback" not in err and _partial_rows(out) >= 1
    alive = [p for p, _, state, _ in _processes() if p in workers and state != "Z"]
    for p in alive:
        os.kill(p, signal.SIGKILL)
    assert not alive
