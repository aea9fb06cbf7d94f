"""Every script's command line: bad input is one line naming the argument on stderr and exit status 2.

The walk runs each script's real ``__main__`` block in this process (``runpy``), so a script whose
bad input escapes as a traceback, or exits with another status, fails here; one subprocess proves
the same for a script started by the interpreter.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

READ_ONLY = "/sys/mecoffload-cli-test"  # sysfs: no one, not even root, creates files there
# a run of a few steps in the test's folder, so a setting that is not refused cannot run long or write elsewhere
TINY = ["run_dir={tmp}/run", "env_kwargs.n_users=4", "total_timesteps=8", "batch_size=8", "progress_bar=false",
        "eval_freq=8", "eval_seeds=1", "n_envs=1"]
TINY_PPO = [*TINY, "env_kwargs.scenario=small", "n_steps=8"]

# (script, arguments, what the one line must name); {tmp} is a fresh folder, {file} a file in it, {tokens} a
# token table whose third line has accept_prob 'abc'
CASES = [
    ("train/ppo.py", ["--set", *TINY_PPO, "env_id=CartPole-v1"], "env_id"),
    ("train/ppo.py", ["--set", *TINY_PPO, "n_envs=1025"], "n_envs"),
    ("train/ppo.py", ["--set", *TINY_PPO, "threads=100000"], "threads"),
    ("train/ppo.py", ["--set", *TINY_PPO, "hidden=1000000"], "hidden"),
    ("train/ppo.py", ["--set", *TINY_PPO, "learning_rate=1.0e+309"], "learning_rate"),
    ("train/ppo.py", ["--set", *TINY_PPO, "run_dir={file}"], "run_dir"),
    ("train/ppo.py", ["--set", *TINY_PPO, f"run_dir={READ_ONLY}/run"], "run_dir"),
    ("train/ppo.py", ["--set", *TINY_PPO, "init_model={tmp}/missing.zip"], "init_model"),
    ("train/dqn.py", ["--set", *TINY, "learning_starts=1", "threads=100000"], "threads"),
    ("train/queue_ppo.py", ["--evaluate", "{tmp}/missing.zip", "--set", "final_eval_seeds=1"], "--evaluate"),
    ("train/spec_ppo.py", ["--set", *TINY, "n_steps=8", "final_eval_seeds=1", "hidden=100000"], "hidden"),
    ("train/imitate.py", ["--set", "workers=100000", "env_kwargs.scenario=small", "env_kwargs.n_users=4",
                          "train_episodes=1", "slots_per_episode=1", "valid_episodes=1", "epochs=1",
                          "progress_bar=false", "run_dir={tmp}/imitate"], "workers"),
    ("train/evaluate.py", ["--env", "Foo-v0", "--seeds", "1", "--out", "{tmp}/eval"], "--env"),
    ("train/evaluate.py", ["--seeds", "10000000", "--out", "{tmp}/eval"], "--seeds"),
    ("train/evaluate.py", ["--out", "{file}"], "--out"),
    ("train/evaluate.py", ["--agents", "GOA", "GOA", "--seeds", "1", "--set", "scenario=small", "n_users=2",
                           "--out", "{tmp}/eval"], "--agents"),
    ("train/evaluate.py", ["--agents", "GOA", "@SUM(1+1)={tmp}/m.zip", "--seeds", "1", "--set", "scenario=small",
                           "n_users=2", "--out", "{tmp}/eval"], "--agents"),
    ("train/evaluate.py", ["--agents", "GOA", "={tmp}/m.zip", "--seeds", "1", "--set", "scenario=small", "n_users=2",
                           "--out", "{tmp}/eval"], "--agents"),
    ("train/plot_run.py", ["{tmp}/missing"], "run_dir"),
    ("train/queue_compare.py", ["--v", "-1", "--only", "sweep-v", "--episodes", "1", "--slots", "4",
                                "--out", "{tmp}/q"], "--v"),
    ("train/queue_compare.py", ["--slots", "100000000", "--out", "{tmp}/q"], "--slots"),
    ("train/spec_timing.py", ["--agents", "Oracle", "--episodes", "2", "--out", "{tmp}/t"], "--agents"),
    ("train/spec_timing.py", ["--episodes", "1", "--out", "{tmp}/t"], "--episodes"),
    ("train/spec_compare.py", ["--risk", "nan", "--episodes", "1", "--set", "scenario=small", "n_users=2",
                               "tokens=synthetic", "--out", "{tmp}/s"], "--risk"),
    ("train/spec_compare.py", ["--agents", "HLM b=99", "--episodes", "1", "--set", "scenario=small", "n_users=2",
                               "tokens=synthetic", "--out", "{tmp}/s"], "--agents"),
    ("train/spec_compare.py", ["--set", "tokens={tokens}", "n_users=2", "--episodes", "1", "--out", "{tmp}/s"],
     "accept_prob"),
    ("train/spec_figures.py", ["--risk", "2", "--only", "threshold", "--episodes", "1", "--set", "scenario=small",
                               "n_users=2", "tokens=synthetic", "--out", "{tmp}/f"], "--risk"),
    ("train/distill.py", ["{tmp}/missing.zip", "--out", "{tmp}/d"], "teacher"),
    ("train/transfer.py", ["{tmp}/missing.zip", "--seeds", "1", "--settings", "small:2", "--out", "{tmp}/t"], "model"),
    ("train/reproduce.py", ["fig3", "--workers", "100000", "--runs", "2", "--n", "6", "--out", "{tmp}/r"],
     "--workers"),
    ("train/reproduce.py", ["fig3", "--runs", "10000000", "--n", "6", "--out", "{tmp}/r"], "--runs"),
    ("train/rllib_ppo.py", ["--evaluate", "{tmp}/missing"], "--evaluate"),
    ("train/tune.py", ["--num-cpus", "100000", "--out", "{tmp}/tune"], "--num-cpus"),
    ("train/build_prompt_sizes.py", ["--babi", "{tmp}/missing", "--out", "{tmp}/sizes.csv"], "--babi"),
    ("train/build_traces.py", ["--threads", "100000"], "--threads"),
    ("train/build_traces.py", ["--babi", "{tmp}/missing", "--work-dir", "{tmp}/w"], "--babi"),  # before any training
    pytest.param("train/build_token_traces.py", ["--threads", "100000"], "--threads",
                 marks=pytest.mark.slow),  # imports transformers: seconds
    pytest.param("train/train_babi_lm.py", ["--threads", "100000"], "--threads", marks=pytest.mark.slow),
    ("bench/bench.py", ["--out", f"{READ_ONLY}/results.json", "--quick"], "--out"),
]


def bad_token_table(folder: Path) -> Path:
    """The shipped token table's first rows, line 3's ``accept_prob`` not a number, with the answers beside it."""
    data = ROOT / "mec_env" / "data"
    lines = (data / "spec_tokens_babi.csv").read_text(encoding="utf-8").splitlines()[:40]
    cells = lines[2].split(",")
    cells[lines[0].split(",").index("accept_prob")] = "abc"
    lines[2] = ",".join(cells)
    (folder / "spec_tokens_bad.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "spec_answers_bad.csv").write_bytes((data / "spec_answers_babi.csv").read_bytes())
    return folder / "spec_tokens_bad.csv"


def run_script(script: str, argv: list[str], monkeypatch) -> int | str | None:
    """The script's ``__main__`` block, run here with ``argv``; its exit status."""
    path = str(ROOT / script)
    monkeypatch.setattr(sys, "argv", [path, *argv])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(path, run_name="__main__")
    return stop.value.code


def assert_one_line(stderr: str, script: str, argument: str) -> None:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{Path(script).name}: error: "), stderr
    assert argument in lines[0], stderr


@pytest.mark.parametrize("script, argv, argument", CASES)
def test_bad_input_is_one_line_and_status_2(script, argv, argument, tmp_path, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    tokens = bad_token_table(tmp_path) if any("{tokens}" in a for a in argv) else None
    argv = [a.format(tmp=tmp_path, file=tmp_path / "a_file", tokens=tokens) for a in argv]
    monkeypatch.delenv("WANDB_MODE", raising=False)
    code = run_script(script, argv, monkeypatch)
    assert code == 2, capsys.readouterr().err
    assert_one_line(capsys.readouterr().err, script, argument)


def test_wandb_online_without_key_is_refused_up_front(tmp_path, monkeypatch, capsys):
    """WANDB_MODE=online with no API key (no WANDB_API_KEY, no netrc entry): one line, before the run."""
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # an empty netrc: no login for api.wandb.ai
    (tmp_path / "netrc").write_text("")
    monkeypatch.setenv("HOME", str(tmp_path))
    run_dir = tmp_path / "run"
    code = run_script("train/ppo.py", ["--set", "wandb=true", f"run_dir={run_dir}", "env_kwargs.scenario=small",
                                       "env_kwargs.n_users=4", "total_timesteps=8", "n_steps=8", "batch_size=8",
                                       "n_envs=1", "progress_bar=false"], monkeypatch)
    assert code == 2
    assert_one_line(capsys.readouterr().err, "train/ppo.py", "WANDB_MODE")
    assert not run_dir.exists()  # refused before the run directory was made


def test_a_started_script_prints_one_line_and_exits_2(tmp_path):
    """The same through the interpreter: ``python train/plot_run.py MISSING``."""
    proc = subprocess.run([sys.executable, str(ROOT / "train" / "plot_run.py"), str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert_one_line(proc.stderr, "plot_run.py", "run_dir")


def test_set_value_is_the_text_after_the_equals_sign():
    """``#`` would start a YAML comment: ``run_dir=runs/exp #2`` named ``runs/exp``, another run's folder."""
    from agents.training import PPOConfig, load_config
    from mec_env.config import parse_key_values

    assert load_config(PPOConfig, "ppo", ["run_dir=runs/exp #2"]).run_dir == "runs/exp #2"
    assert parse_key_values(["a=x #1", "b=[64, 64]", "c=3.0e-4", "d=20", "e=true", "f=a: b", "g=- x", "h=",
                             "i='quoted #'", "j=\"U-HLM b=1\""]) == {
        "a": "x #1", "b": [64, 64], "c": 3e-4, "d": 20, "e": True, "f": "a: b", "g": "- x", "h": None,
        "i": "'quoted #'", "j": "U-HLM b=1"}


def test_set_number_beyond_float_range_is_refused():
    from mec_env.config import parse_key_values
    from mec_env.errors import ConfigError

    for item in ("x=1.0e+309", "x=[1, -2.0e+400]"):
        with pytest.raises(ConfigError, match="'x'.*float range"):
            parse_key_values([item])
    assert parse_key_values(["x=.inf"]) == {"x": float("inf")}  # asked for by name


@pytest.mark.parametrize("field, value", [("n_envs", 100_000), ("threads", 100_000), ("hidden", 10**6)])
def test_training_counts_are_bounded(field, value):
    """The settings alone are refused (the walk above runs the scripts; here, no run could start)."""
    from agents.training import PPOConfig, load_config
    from mec_env.errors import ConfigError

    with pytest.raises(ConfigError, match=f"'{field}'.*in \\[1, "):
        load_config(PPOConfig, "ppo", [f"{field}={value}"])


@pytest.mark.parametrize("field, value", [("workers", 100_000), ("threads", 100_000), ("hidden", 10**6)])
def test_imitation_counts_are_bounded(field, value):
    from agents.imitation import ImitationConfig
    from mec_env.config import build_config
    from mec_env.errors import ConfigError

    with pytest.raises(ConfigError, match=f"'{field}'.*in \\[1, "):
        build_config(ImitationConfig, {field: value})


def test_csv_cells_a_spreadsheet_would_run_are_inert(tmp_path):
    from mec_env.io import atomic_write_csv

    path = atomic_write_csv(tmp_path / "t.csv", [{"agent": "@SUM(1+1)", "x": -0.5, "y": "-0.5", "z": "=1+2"}])
    assert path.read_text().splitlines()[1] == "'@SUM(1+1),-0.5,-0.5,'=1+2"


def test_the_wrapper_keeps_a_bugs_traceback(capsys):
    from agents.cli import run_main
    from mec_env.errors import ConfigError

    def buggy(argv):
        return {}["missing"]

    with pytest.raises(KeyError):
        run_main(buggy, [], prog="x.py")

    def bad(argv):
        raise ConfigError("n_users", 0, "an integer in [1, 100000]")

    with pytest.raises(SystemExit) as stop:
        run_main(bad, [], prog="x.py")
    assert stop.value.code == 2
    said = capsys.readouterr().err
    assert said == "x.py: error: invalid value for 'n_users': 0; expected an integer in [1, 100000]\n"
