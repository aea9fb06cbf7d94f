"""Ray for the Monte Carlo sweeps and the RLlib scripts: join a cluster or start a local runtime whose
processes end with this one, and run chunks of work as Ray tasks.

Ray is an extra (``pip install .[ray]``); it is imported inside the functions, never at import time.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterator

from mec_env.errors import ConfigError


def add_address_argument(ap: Any, local: str) -> None:
    """The ``--address`` option of the scripts that run on Ray: the cluster :func:`ray_runtime` joins,
    or (None) ``local``, said in the help."""
    ap.add_argument("--address", default=None,
                    help="a running Ray cluster to join ('auto', or HOST:PORT of `ray start --head`); "
                         f"default: {local}")


def ray_runtime(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` ("auto", HOST:PORT of ``ray start --head``), or start a local
    runtime of ``num_cpus`` (default all cores) of this process's own, even where a cluster runs on this
    machine (which ``ray.init()`` would join); nothing if Ray is already initialised in this process.

    A cluster that cannot be reached raises :class:`~mec_env.errors.ConfigError` naming ``--address``.
    A local runtime's processes end with this one, even when it is killed (:func:`_reap_with_this_process`).
    """
    import logging

    import ray

    if ray.is_initialized():
        return
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, TimeoutError) as err:  # no cluster there: one line naming the option
            raise ConfigError("--address", address, f"{_CLUSTER}; {str(err).split('. ')[0] or type(err).__name__}"
                              ) from None
    else:
        before = _descendants()
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
        _reap_with_this_process({pid: start for pid, start in _descendants().items() if before.get(pid) != start})


_CLUSTER = "a running Ray cluster: 'auto', or HOST:PORT of `ray start --head`"


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) address must accept a TCP connection within ``timeout_s``:
    ``ray.init`` retries an unreachable one for minutes."""
    import socket

    if address == "auto":
        return  # Ray looks for a cluster of this machine and says at once when there is none
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError("--address", address, _CLUSTER)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ConfigError("--address", address, f"{_CLUSTER}; {host}:{port} cannot be reached "
                          f"({err.strerror or type(err).__name__})") from None


# The reaper of a local Ray runtime: waits for its stdin to close (the driver has ended, however it ended), then
# SIGKILLs the processes it was given that are still the same processes (same start time in /proc).
_REAPER = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.stdin.buffer.read()
for item in sys.argv[1:]:
    pid, start = item.split(":")
    try:
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().rpartition(")")[2].split()[19] == start:
                os.kill(int(pid), signal.SIGKILL)
    except (OSError, IndexError):
        pass
"""
_REAPERS: list[Any] = []  # the reapers (their stdin pipes stay open as long as this process lives)


def _descendants() -> dict[int, str]:
    """This process's descendants, pid -> start time (clock ticks since boot, ``/proc/PID/stat``); {} without /proc."""
    parent, start = {}, {}
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as fh:
                    fields = fh.read().rpartition(")")[2].split()
            except OSError:  # ended meanwhile
                continue
            parent[int(entry.name)], start[int(entry.name)] = int(fields[1]), fields[19]
    out, frontier = {}, [os.getpid()]
    while frontier:
        pid = frontier.pop()
        for child in (c for c, p in parent.items() if p == pid and c not in out):
            out[child] = start[child]
            frontier.append(child)
    return out


def _reap_with_this_process(processes: dict[int, str]) -> None:
    """End ``processes`` (pid -> start time) when this process ends, even by SIGKILL.

    A local Ray runtime's GCS and raylet die with the driver (Ray sets PR_SET_PDEATHSIG), but the
    raylet's dashboard and runtime-env agents then wait a minute and more on the dead GCS. A small
    process of its own session (a Ctrl-C of the terminal leaves it be) holds a pipe from this one; the
    pipe closes when this process ends, and it kills what is left.
    """
    import subprocess

    if not processes:
        return
    reaper = subprocess.Popen([sys.executable, "-c", _REAPER, *(f"{p}:{s}" for p, s in processes.items())],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    _REAPERS.append(reaper)  # keeps its stdin open; it is never written to


def _run_where(run: Callable[[Any], Any], chunk: Any) -> tuple[Any, str]:
    import ray

    return run(chunk), ray.get_runtime_context().get_node_id()


def ray_map(run: Callable[[Any], Any], chunks: list[Any]) -> Iterator[tuple[Any, tuple[Any, str]]]:
    """``(chunk, (run(chunk), node id))`` for every chunk, a Ray task each, as the tasks finish (the caller
    sorts the rows); a failed task raises its error here, and the ones still pending are cancelled."""
    import ray

    task = ray.remote(num_cpus=1, max_retries=1)(_run_where)
    pending = {task.remote(run, c): c for c in chunks}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
