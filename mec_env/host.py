"""What this host lets the process use: the CPUs it may run on.

``os.cpu_count()`` is the machine's count. A container or a batch job often gets fewer: an affinity mask
(``taskset``, Slurm) or a cgroup CPU quota (Docker's ``--cpus``, Kubernetes limits). A pool sized by the
machine's count then runs dozens of processes on two CPUs' worth of time, and pays their start-up,
imports and scheduling for nothing.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup quota (v2 or v1); at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _cgroup_quota(root: Path) -> float | None:
    """The cgroup CPU quota in CPUs (quota / period), or None when there is none or it cannot be read."""
    try:
        v2 = root / "cpu.max"
        if v2.exists():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = root / "cpu" / "cpu.cfs_quota_us"
        if v1.exists():
            quota_us = int(v1.read_text())
            period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
            return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
    return None
