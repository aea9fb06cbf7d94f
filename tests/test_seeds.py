"""The named seed ranges (mec_env/seeds.py): disjoint, the values results were recorded with, and no
config (large n_envs, many episodes, a resumed run) that would take a run's seeds out of its range."""

from __future__ import annotations

import itertools

import pytest

pytest.importorskip("torch")  # the train extra: agents.training builds on SB3
pytest.importorskip("stable_baselines3")


from agents.imitation import ImitationConfig  # noqa: E402
from agents.training import DQNConfig, PPOConfig, QueuePPOConfig, SpecPPOConfig, eval_seeds  # noqa: E402
from agents.tuning import TuneConfig  # noqa: E402
from mec_env.config import build_config  # noqa: E402
from mec_env.errors import ConfigError  # noqa: E402
from mec_env.seeds import (EVALUATION, HELD_OUT, RANGES, TRAINING, VALIDATION, evaluation_seeds, held_out_seeds,  # noqa: E402
                           resumed_seed, training_seeds, validation_seeds)


def test_the_ranges_are_disjoint_and_named():
    assert len({r.name for r in RANGES}) == len(RANGES) == 4
    for a, b in itertools.combinations(RANGES, 2):
        assert a.stop <= b.start or b.stop <= a.start, (a, b)
    assert all(r.size > 0 for r in RANGES)


def test_the_seeds_are_the_values_results_were_recorded_with():
    assert evaluation_seeds(3) == [10_000, 10_001, 10_002]
    assert held_out_seeds(2) == [20_000, 20_001]
    assert validation_seeds(2) == [30_000, 30_001]
    assert training_seeds(7, 3) == [7, 8, 9]
    assert eval_seeds(PPOConfig(eval_seeds=4)) == [10_000, 10_001, 10_002, 10_003]
    assert resumed_seed(5, 0, 4) == 5  # a fresh run starts where it always did


@pytest.mark.parametrize("get, field, size", [(evaluation_seeds, "eval_seeds", EVALUATION.size),
                                              (held_out_seeds, "final_eval_seeds", HELD_OUT.size),
                                              (validation_seeds, "valid_episodes", VALIDATION.size)])
def test_asking_for_more_seeds_than_a_range_holds_names_the_field(get, field, size):
    assert len(get(size)) == size
    with pytest.raises(ConfigError, match=f"'{field}'"):
        get(size + 1)


@pytest.mark.parametrize("n_envs, timesteps", [(1, 0), (4, 50_000), (1024, 10**9 + 7), (7, TRAINING.size - 3)])
def test_a_resumed_run_stays_in_the_training_range(n_envs, timesteps):
    for seed in (0, 1, TRAINING.stop - n_envs):
        first = resumed_seed(seed, timesteps, n_envs)
        assert all(s in TRAINING for s in range(first, first + n_envs))
    if timesteps % (TRAINING.size - n_envs + 1):
        assert resumed_seed(0, timesteps, n_envs) != 0  # it does not replay the episodes it started from


@pytest.mark.parametrize("cls", [PPOConfig, DQNConfig, SpecPPOConfig, QueuePPOConfig])
def test_a_training_config_whose_envs_would_leave_the_training_range_names_seed(cls):
    cls(seed=TRAINING.stop - 1024, n_envs=1024)  # the last env's seed is the range's last
    with pytest.raises(ConfigError, match="'seed'"):
        cls(seed=TRAINING.stop - 1023, n_envs=1024)
    with pytest.raises(ConfigError, match="'seed'"):
        build_config(cls, {"seed": TRAINING.stop})
    with pytest.raises(ConfigError, match="'eval_seeds'"):
        build_config(cls, {"eval_seeds": EVALUATION.size + 1})


def test_the_final_tables_stay_in_the_held_out_range():
    for cls in (SpecPPOConfig, QueuePPOConfig, TuneConfig):
        with pytest.raises(ConfigError, match="'final_eval_seeds'"):
            build_config(cls, {"final_eval_seeds": HELD_OUT.size + 1})


def test_behaviour_cloning_episodes_stay_in_their_ranges():
    ImitationConfig(seed=TRAINING.stop - 100, train_episodes=100)
    with pytest.raises(ConfigError, match="'seed'"):
        ImitationConfig(seed=TRAINING.stop - 99, train_episodes=100)  # the expert's last episode would be 10,000
    with pytest.raises(ConfigError, match="'valid_episodes'"):
        build_config(ImitationConfig, {"valid_episodes": VALIDATION.size + 1})
    with pytest.raises(ConfigError, match="'seed'"):
        build_config(TuneConfig, {"seed": [0, TRAINING.stop]})
