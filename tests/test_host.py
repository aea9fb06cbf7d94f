"""The worker count of the sweeps follows the CPUs this process may use, not the machine's count."""

from __future__ import annotations

import os

import pytest

from mec_env.host import usable_cpus


@pytest.fixture
def sixty_four_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)


def test_a_cgroup_v2_quota_of_two_cpus_caps_sixty_four_visible_ones(tmp_path, sixty_four_cpus):
    (tmp_path / "cpu.max").write_text("200000 100000\n")
    assert usable_cpus(tmp_path) == 2


def test_a_fractional_quota_rounds_up_and_no_quota_leaves_the_affinity_mask(tmp_path, sixty_four_cpus):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert usable_cpus(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == 64


def test_a_cgroup_v1_quota_caps_too_and_an_unreadable_one_is_ignored(tmp_path, sixty_four_cpus):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == 3
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("garbage\n")
    assert usable_cpus(tmp_path) == 64


def test_an_affinity_mask_of_one_cpu_gives_one_worker(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert usable_cpus(tmp_path) == 1
