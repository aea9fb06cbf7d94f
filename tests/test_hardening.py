"""Hardening: every input path rejects bad values with an error naming the field, property-based
tests and a bounded fuzz of the config and trace loaders, numerical extremes free of NaN/inf,
determinism across runs and process counts, and resumable sweeps."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mec_env  # noqa: F401
from baselines import PAPER_STRATEGIES, STRATEGIES, goa
from mec_env.config import ScenarioConfig, load_scenario, scenario_from_dict
from mec_env.slots import relocate
from mec_env.errors import AssignmentError, ConfigError
from baselines.experiments import Point, monte_carlo
from mec_env.evaluator import evaluate, local_objective, user_delays
from mec_env.problem import es_grid_positions, sample_problem
from mec_env.traces import TRACE_COLUMNS, TraceError, load_traces

ROOT = Path(__file__).resolve().parent.parent
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SCENARIO_FIELDS = [f for f in dataclasses.fields(ScenarioConfig) if f.name != "queries"]
ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                      st.text(max_size=8), st.lists(st.integers(), max_size=3))


# --- configs ------------------------------------------------------------------------------

def allowed(f: dataclasses.Field, value) -> bool:
    """Whether the field's declared type, range and choices admit ``value`` (the spec the loader enforces)."""
    meta = f.metadata
    if f.type in ("int", int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif f.type in ("float", float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, str)
    if ok and "choices" in meta:
        ok = value in meta["choices"]
    if ok and "range" in meta:
        lo, hi = meta["range"]
        ok = (value > lo if meta.get("open_low") else value >= lo) and value <= hi
    return ok


@FUZZ
@given(field=st.sampled_from(SCENARIO_FIELDS), value=ANY_VALUE)
def test_any_scenario_value_is_accepted_iff_allowed_else_named(field, value):
    data = {field.name: value}
    if field.name == "es_capacity_low" or field.name == "local_capacity_low":
        data = {**data}  # the low <= high cross-check is exercised below
    try:
        cfg = scenario_from_dict(data, base=ScenarioConfig())
    except ConfigError as err:
        assert field.name in str(err) and "expected" in str(err)
        # cross-field checks: low <= high, N0 x B > 0, the memory budget of N x M arrays
        assert not allowed(field, value) or field.name.endswith(("_low", "_high")) or field.name in (
            "noise_psd_w_per_hz", "bandwidth_hz", "max_array_bytes")
    else:
        stored = getattr(cfg, field.name)
        assert allowed(field, stored), (field.name, value)


@FUZZ
@given(text=st.text(max_size=200))
def test_scenario_yaml_fuzz_gives_a_config_or_a_config_error(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        cfg = load_scenario(path)
    except ConfigError as err:
        assert "expected" in str(err)
    else:
        assert isinstance(cfg, ScenarioConfig)


@FUZZ
@given(key=st.sampled_from(["gamma", "learning_rate", "n_steps", "batch_size", "policy", "env_id", "seed",
                            "checkpoint_freq", "env_kwargs.n_users", "env_kwargs.tau", "bogus"]),
       value=st.one_of(st.integers(-5, 10**7), st.floats(allow_nan=True), st.text(max_size=6), st.booleans()))
def test_training_overrides_are_checked(key, value):
    from agents.training import PPOConfig, load_config

    try:
        cfg = load_config(PPOConfig, "ppo", [f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"])
    except ConfigError as err:
        assert key.split(".")[-1] in str(err)
    else:
        if key == "gamma":
            assert 0.0 <= cfg.gamma <= 1.0
        if key in ("n_steps", "batch_size", "checkpoint_freq"):
            assert getattr(cfg, key) >= 1


def test_bad_yaml_and_bad_override_syntax_are_config_errors(tmp_path):
    from agents.training import PPOConfig, load_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("n_users: [1,\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="malformed YAML at line"):
        load_scenario(bad)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(PPOConfig, "ppo", ["gamma"])
    with pytest.raises(ConfigError, match="noise_psd_w_per_hz"):
        load_scenario("paper", noise_psd_w_per_hz=0.0)
    with pytest.raises(ConfigError, match="bandwidth_hz.*finite"):
        load_scenario("paper", bandwidth_hz=float("inf"))


@pytest.mark.parametrize("kwargs,name", [
    ({"n_users": 0}, "n_users"), ({"tau": 1.5}, "tau"), ({"episode_length": 0}, "episode_length"),
    ({"penalty": "nope"}, "penalty"), ({"penalty_weight": -1.0}, "penalty_weight"), ({"flat_obs": 1}, "flat_obs"),
    ({"not_a_field": 3}, "not_a_field"), ({"render_mode": "video"}, "render_mode"),
    ({"background_load": 0.95}, "background_load"), ({"n_edge_servers": 0}, "n_edge_servers"),
])
@pytest.mark.parametrize("env_id", ["MECOffload-v0", "MECOffloadSeq-v0"])
@pytest.mark.filterwarnings("ignore:.*render_mode")  # gymnasium warns before the env raises
def test_gymnasium_make_kwargs_are_validated(env_id, kwargs, name):
    with pytest.raises(ConfigError, match=name):
        gym.make(env_id, **kwargs)


def test_saved_model_paths_are_checked(tmp_path):
    from agents.model_zip import load_model

    with pytest.raises(FileNotFoundError, match="no saved model at"):
        load_model(tmp_path / "missing.zip")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="is not a Stable-Baselines3 model zip"):
        load_model(junk)


# --- actions ------------------------------------------------------------------------------

@FUZZ
@given(data=st.data())
def test_any_action_is_applied_iff_valid_and_never_half_applied(data):
    env = gym.make("MECOffload-v0", scenario="small").unwrapped
    env.reset(seed=0)
    n, m = env.cfg.n_users, env.cfg.n_edge_servers
    shape = data.draw(st.sampled_from([(n,), (n + 1,), (n - 1,), (), (1, n), (n, 1)]))
    dtype = data.draw(st.sampled_from([np.int64, np.int32, np.uint8, np.float64, np.float32, bool]))
    values = data.draw(st.lists(st.one_of(st.integers(-3, m + 3), st.floats(-2, m + 2), st.just(float('nan'))),
                                min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    with np.errstate(invalid="ignore"):
        action = np.array(values).astype(dtype).reshape(shape)
    a = np.asarray(action)
    valid = (a.shape == (n,) and a.dtype != bool and np.all(np.isfinite(a)) and np.all(a == np.round(a))
             and np.all((a >= 0) & (a <= m)))
    before, slot = env.problem, env.core.slot
    if valid:
        _, reward, *_ = env.step(action)
        assert np.isfinite(reward)
    else:
        with pytest.raises(AssignmentError, match="action"):
            env.step(action)
        assert env.problem is before and env.core.slot == slot


# --- trace files --------------------------------------------------------------------------

def trace_text(rows: int = 3) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TRACE_COLUMNS)
    for k in range(rows):
        base = {"task": 1, "story_id": k, "question_id": k, "prompt_bytes": 200, "prompt_tokens": 50,
                "answer_tokens": 1, "margin": 0.5, "entropy": 0.4, "perplexity": 0.3, "slm_correct": 1,
                "llm_correct": 0}
        w.writerow([base.get(c, "x") for c in TRACE_COLUMNS])
    return buf.getvalue()


@FUZZ
@given(data=st.data())
def test_trace_loader_fuzz_gives_a_table_or_a_trace_error(tmp_path, data):
    text = trace_text()
    lines = text.splitlines()
    how = data.draw(st.sampled_from(["cell", "drop_column", "truncate", "garbage"]))
    if how == "cell":
        row = data.draw(st.integers(1, len(lines) - 1))
        cells = lines[row].split(",")
        col = data.draw(st.integers(0, len(cells) - 1))
        cells[col] = data.draw(st.one_of(st.text(max_size=5).filter(lambda s: "," not in s and "\n" not in s
                                                                    and "\r" not in s and '"' not in s),
                                         st.floats(allow_nan=True).map(repr), st.integers(-5, 5).map(str)))
        lines[row] = ",".join(cells)
        text = "\n".join(lines) + "\n"
    elif how == "drop_column":
        col = data.draw(st.integers(0, len(TRACE_COLUMNS) - 1))
        text = "\n".join(",".join(c for j, c in enumerate(line.split(",")) if j != col) for line in lines) + "\n"
    elif how == "truncate":
        text = text[:data.draw(st.integers(0, len(text)))]
    else:
        text = data.draw(st.text(max_size=300))
    path = tmp_path / f"fuzz-{abs(hash(text))}.csv"
    path.write_text(text, encoding="utf-8")
    try:
        table = load_traces(path)
    except TraceError as err:
        assert str(path) in str(err) or "trace table" in str(err)
    else:
        for values in table.uncertainty.values():
            assert np.all((values >= 0) & (values <= 1))
        assert len(table) >= 1 and np.all(table.prompt_bytes >= 1)


# --- numerical extremes -------------------------------------------------------------------

def finite_tree(x) -> bool:
    if isinstance(x, dict):
        return all(finite_tree(v) for v in x.values())
    return bool(np.all(np.isfinite(np.asarray(x, dtype=np.float64))))


@pytest.mark.parametrize("n,m", [(1, 1), (1, 16), (2, 3), (120, 1), (120, 16), (1000, 4), (1000, 16)])
@pytest.mark.parametrize("tau", [0.0, 1.0])
def test_extremes_of_size_and_threshold_stay_finite(n, m, tau):
    env = gym.make("MECOffload-v0", n_users=n, n_edge_servers=m, tau=tau, episode_length=3, flat_obs=True)
    obs, _ = env.reset(seed=n + m)
    assert finite_tree(obs)
    problem = env.unwrapped.problem
    for action in (np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64), goa(problem),
                   env.action_space.sample(), np.full(n, m, dtype=np.int64)):
        obs, reward, _, _, info = env.step(action)
        assert finite_tree(obs) and math.isfinite(reward)
        assert finite_tree({k: v for k, v in info.items() if k != "es_users"})


def test_users_on_top_of_an_es_in_far_corners_and_in_deep_fades():
    cfg = load_scenario("paper", n_users=8)
    p = sample_problem(cfg, 0)
    es = es_grid_positions(cfg.n_edge_servers, cfg.area_side_m)
    side = cfg.area_side_m
    xy = np.array([es[0], es[1], es[2], es[3], [0.0, 0.0], [side, side], [0.0, side], [side, 0.0]])
    p = relocate(p, cfg, xy)  # distance 0 to an ES is floored at min_distance_m
    faded = dataclasses.replace(p, gain=np.where(np.arange(8)[:, None] >= 6, 0.0, p.gain))  # two users, no signal
    for problem in (p, faded):
        for a in (np.zeros(8), np.ones(8), np.arange(8) % 5, goa(problem)):
            t_comm, t_compute, delay = user_delays(problem, np.asarray(a, dtype=np.int64))
            ev = evaluate(problem, np.asarray(a, dtype=np.int64))
            assert np.all(np.isfinite(delay)) and math.isfinite(ev.objective)
    # a user with no signal gets the documented cap: rate floored at min_rate_bps, t_comm = D / min_rate
    t_comm = user_delays(faded, np.ones(8, dtype=np.int64))[0]
    np.testing.assert_allclose(t_comm[6:], faded.query_bits[6:] / cfg.min_rate_bps)


def test_all_alphas_zero_gives_a_finite_reward():
    env = gym.make("MECOffload-v0", scenario="small").unwrapped
    env.reset(seed=0)
    env.core.problem = dataclasses.replace(env.problem, alpha=np.zeros(env.cfg.n_users))
    env.core.local_objective = local_objective(env.problem)
    _, reward, *_ = env.step(np.ones(env.cfg.n_users, dtype=np.int64))
    assert reward == 0.0


def test_an_overflowing_received_power_is_a_config_error_not_inf():
    cfg = load_scenario("paper", n_users=4, min_distance_m=1e-200)
    p = sample_problem(cfg, 0)
    with pytest.raises(ConfigError, match="min_distance_m"), np.errstate(over="ignore"):
        relocate(p, cfg, np.repeat(es_grid_positions(4, cfg.area_side_m)[:1], 4, axis=0))


# --- determinism --------------------------------------------------------------------------

@pytest.mark.parametrize("env_id", ["MECOffload-v0", "MECOffloadSeq-v0"])
def test_thousand_step_trajectories_are_bit_identical(env_id):
    def run():
        dynamics = {"mobility_speed_mps": 3.0, "background_load": 0.3} if env_id == "MECOffload-v0" else {}
        env = gym.make(env_id, scenario="small", **dynamics)
        env.action_space.seed(5)
        flat = lambda o: np.concatenate([np.ravel(v) for v in o.values()]) if isinstance(o, dict) else np.ravel(o)  # noqa: E731
        obs, _ = env.reset(seed=5)
        out = [flat(obs)]
        for _ in range(1000):
            obs, r, term, trunc, _ = env.step(env.action_space.sample())
            out.append(np.concatenate([flat(obs), [r]]))
            if term or trunc:
                obs, _ = env.reset()
        return np.concatenate(out)

    a, b = run(), run()
    assert a.tobytes() == b.tobytes()


def test_monte_carlo_is_identical_across_process_counts_and_resumes(tmp_path):
    cfg = load_scenario("paper")
    points = [Point(20, 0.6), Point(30, 1.0)]
    one = monte_carlo(cfg, points, PAPER_STRATEGIES, runs=12, workers=1, progress=False)
    two = monte_carlo(cfg, points, PAPER_STRATEGIES, runs=12, workers=2, progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "runtime_ms"} for r in rows]  # noqa: E731
    assert strip(one) == strip(two)

    # an interrupted sweep: the partial file holds some draws and a torn last line
    partial = tmp_path / ".sweep.partial.jsonl"
    monte_carlo(cfg, points[:1], PAPER_STRATEGIES, runs=12, workers=1, progress=False, partial=partial)
    text = partial.read_text()
    partial.write_text(text[:len(text) * 2 // 3])
    calls = []
    import baselines.experiments as ex

    original = ex.run_draw

    def counting(*args, **kwargs):
        calls.append(args[2])
        return original(*args, **kwargs)

    ex.run_draw = counting
    try:
        resumed = monte_carlo(cfg, points, PAPER_STRATEGIES, runs=12, workers=1, progress=False, partial=partial)
    finally:
        ex.run_draw = original
    assert strip(resumed) == strip(one)
    assert 12 < len(calls) < 24  # only the draws the partial file did not hold were run again
    # other arguments: the partial file is another sweep's and is not reused
    other = monte_carlo(cfg.replace(tau=0.5), points[:1], PAPER_STRATEGIES, runs=3, workers=1, progress=False,
                        partial=partial)
    assert {r["seed"] for r in other} == {42, 43, 44}


def test_goa_assignments_are_identical_in_another_process():
    code = ("import numpy as np, hashlib; from mec_env import load_scenario, sample_problem; from baselines import goa;"
            "cfg = load_scenario('paper');"
            "print(hashlib.sha256(b''.join(goa(sample_problem(cfg, s)).tobytes() for s in range(30))).hexdigest())")
    here = __import__("hashlib").sha256(b"".join(goa(sample_problem(load_scenario("paper"), s)).tobytes()
                                                 for s in range(30))).hexdigest()
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert there.stdout.strip() == here


def test_every_registered_strategy_is_deterministic_per_seed():
    p = sample_problem(load_scenario("paper", n_users=9), 3)
    for name, solve in STRATEGIES.items():
        a = solve(p, np.random.default_rng(1))
        b = solve(p, np.random.default_rng(1))
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_scenario_yaml_round_trip_is_exact(tmp_path):
    cfg = load_scenario("paper", tau=0.7, **{"queries.metric": "entropy"})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg)), encoding="utf-8")
    assert load_scenario(path) == cfg
