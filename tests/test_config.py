"""Scenario configs: the paper's reference settings and clear errors on bad values."""

from __future__ import annotations

import numpy as np
import pytest

from mec_env.config import ScenarioConfig, load_scenario
from mec_env.errors import ConfigError
from mec_env.problem import es_grid_positions, sample_problem


def test_paper_yaml_is_the_default_scenario():
    assert load_scenario("paper") == ScenarioConfig()


def test_paper_reference_settings():
    c = ScenarioConfig()
    assert (c.n_users, c.n_edge_servers, c.area_side_m, c.tau) == (120, 4, 500.0, 0.6)
    assert c.noise_power_w == pytest.approx(4e-21 * 100e6)
    assert es_grid_positions(4, 500.0).tolist() == [[125, 125], [125, 375], [375, 125], [375, 375]]


def test_small_scenario_and_overrides():
    c = load_scenario("small", tau=0.8, **{"queries.metric": "entropy"})
    assert (c.n_users, c.n_edge_servers, c.tau, c.queries.metric) == (8, 2, 0.8, "entropy")


@pytest.mark.parametrize(
    "changes, field, allowed",
    [
        ({"n_users": 0}, "n_users", r"\[1, 100000\]"),
        ({"n_edge_servers": 0}, "n_edge_servers", r"\[1, 1024\]"),
        ({"tau": 1.5}, "tau", r"\[0, 1\]"),
        ({"tau": -0.1}, "tau", r"\[0, 1\]"),
        ({"bandwidth_hz": -1e6}, "bandwidth_hz", "a value > 0"),
        ({"tx_power_w": -0.2}, "tx_power_w", "a value > 0"),
        ({"tx_power_w": 0.0}, "tx_power_w", "a value > 0"),
        ({"interference": "wrong"}, "interference", "'physical', 'paper', 'none'"),
        ({"query_size_unit": "kB"}, "query_size_unit", "'bytes_as_bits', 'bits'"),
        ({"n_users": 2.5}, "n_users", "an integer"),
        ({"tau": "high"}, "tau", "a number"),
        ({"queries.metric": "vibes"}, "queries.metric", "'margin', 'entropy', 'perplexity'"),
        ({"es_capacity_low": 2.0}, "es_capacity_low", "<= es_capacity_high"),
    ],
)
def test_bad_scenario_value_names_field_and_allowed_range(changes, field, allowed):
    with pytest.raises(ConfigError, match=allowed) as info:
        load_scenario("paper", **changes)
    assert info.value.field == field
    assert f"'{field}'" in str(info.value)


def test_unknown_key_is_rejected_with_the_known_fields(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("n_users: 10\nbandwith_hz: 1.0e+8\n")
    with pytest.raises(ConfigError, match="unknown field for 'bandwith_hz'.*bandwidth_hz"):
        load_scenario(path)


def test_unknown_scenario_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="paper"):
        load_scenario("no_such_scenario")


def test_same_seed_same_problem_different_seed_different_problem():
    c = load_scenario("small")
    a, b, d = sample_problem(c, 42), sample_problem(c, 42), sample_problem(c, 43)
    assert np.array_equal(a.gain, b.gain) and np.array_equal(a.alpha, b.alpha)
    assert not np.array_equal(a.gain, d.gain)


def test_query_size_unit_bits_is_eight_times_bytes():
    c = load_scenario("small")
    p_bytes = sample_problem(c, 1)
    p_bits = sample_problem(c.replace(query_size_unit="bits"), 1)
    assert np.array_equal(p_bits.query_bits, 8 * p_bytes.query_bits)


def test_3gpp_path_loss_is_weaker_than_free_space_at_range():
    c = load_scenario("small")
    fs = sample_problem(c, 3)
    umi = sample_problem(c.replace(path_loss="3gpp_umi"), 3)
    assert np.all(umi.gain < fs.gain)


# The dataclass each packaged config fills (module, class): a YAML holds only what differs from its defaults.
TRAIN_CONFIGS = {"ppo": ("agents.training", "PPOConfig"), "dqn": ("agents.training", "DQNConfig"),
                 "spec_ppo": ("agents.training", "SpecPPOConfig"),
                 "spec_budget_ppo": ("agents.spec_users", "SpecBudgetPPOConfig"),
                 "spec_association_ppo": ("agents.spec_users", "SpecBudgetPPOConfig"),
                 "queue_ppo": ("agents.training", "QueuePPOConfig"),
                 "imitate": ("agents.imitation", "ImitationConfig"), "tune": ("agents.tuning", "TuneConfig"),
                 "rllib_ppo": ("agents.rllib", "RLlibPPOConfig"), "rllib_queue": ("agents.rllib", "RLlibPPOConfig")}


def repeated_defaults(data: dict, defaults: dict, nested: tuple[str, ...] = ()) -> list[str]:
    """The keys of ``data`` whose value is the default (inside ``nested`` mappings, which merge: key by key)."""
    out = []
    for key, value in data.items():
        if key in nested and isinstance(value, dict):
            out += [f"{key}.{k}" for k in repeated_defaults(value, defaults[key])]
        elif key in defaults and value == defaults[key]:
            out.append(key)
    return out


def test_repeated_defaults_finds_a_repeat():
    assert repeated_defaults({"n_steps": 128, "gamma": 0.5, "q": {"a": 1, "b": 2}}, {"n_steps": 128, "gamma": 0.0,
                             "q": {"a": 1, "b": 3}}, nested=("q",)) == ["n_steps", "q.a"]


@pytest.mark.parametrize("name", sorted(TRAIN_CONFIGS))
def test_a_train_yaml_holds_only_what_differs_from_its_dataclass(name):
    import dataclasses

    from mec_env.config import build_config, read_config_file

    module, cls = TRAIN_CONFIGS[name]
    cls = getattr(pytest.importorskip(module), cls)
    data, _ = read_config_file(name, "train")
    build_config(cls, data)  # every key is a field of the class
    assert repeated_defaults(data, dataclasses.asdict(cls())) == []


def test_every_packaged_config_is_checked_for_repeated_defaults():
    from mec_env.config import packaged_configs, read_config_file, to_dict

    assert set(packaged_configs("train")) == set(TRAIN_CONFIGS)
    for name in packaged_configs("scenario"):
        data, _ = read_config_file(name, "scenario")
        assert repeated_defaults(data, to_dict(ScenarioConfig()), nested=("queries",)) == [], name
