"""Traces of long generations (mec_env/lm/generation_traces.py, train/build_generation_traces.py): the draft and
verdict drawn given the verifier's token have speculative sampling's law, the cheap temperature perturbation has
the full vocabulary's, and the build runs end to end on a tiny pair, resuming what it finished."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the lm extra
pytest.importorskip("transformers")

from mec_env.lm.generation_traces import couple, first_sentence, rouge_l, temperature_uncertainty  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_the_draft_given_the_verifiers_token_has_speculative_samplings_law():
    """Emitted y ~ q, then (draft, verdict) drawn given y: the draft is distributed as p, it is accepted with
    probability sum min(p, q) overall and min(1, q(x)/p(x)) given the draft x, and an accepted draft is y."""
    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    q = torch.tensor([0.2, 0.4, 0.1, 0.3], dtype=torch.float64)
    n = 200_000
    gen = torch.Generator().manual_seed(0)
    y = torch.multinomial(q, n, replacement=True, generator=gen)
    drafted, accepted = couple(p.expand(n, 4), q.expand(n, 4), y, gen)
    assert (drafted[accepted] == y[accepted]).all()
    freq = torch.bincount(drafted, minlength=4).double() / n
    np.testing.assert_allclose(freq, p, atol=0.004)
    assert float(accepted.double().mean()) == pytest.approx(float(torch.minimum(p, q).sum()), abs=0.004)
    for x in range(4):
        rate = float(accepted[drafted == x].double().mean())
        assert rate == pytest.approx(min(1.0, float(q[x] / p[x])), abs=0.01)


def test_the_temperature_perturbation_over_a_head_and_a_bucket_has_the_full_vocabularys_law():
    """The uncertainty drawn over the 3 likeliest tokens and one bucket for the rest has the mean of the one drawn
    over all 50 tokens (a bucket draw counts as a token of its own)."""
    gen = torch.Generator().manual_seed(1)
    logits = torch.linspace(3.0, -2.0, 50)
    log_p = torch.log_softmax(logits, dim=0).repeat(4000, 1)
    temps = 0.5 + torch.rand((4000, 16), generator=gen)
    full = temperature_uncertainty(log_p, temps, gen, support=50)
    head = temperature_uncertainty(log_p, temps, gen, support=3)
    assert float(full.mean()) == pytest.approx(float(head.mean()), abs=0.01)
    sure = torch.log_softmax(torch.tensor([30.0] + [0.0] * 49), dim=0).repeat(10, 1)
    assert temperature_uncertainty(sure, temps[:10], gen, support=3).max() == 0.0  # every sample agrees


def test_rouge_l_and_the_answer_sentence():
    assert rouge_l([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0 and rouge_l([1, 2], [3, 4]) == 0.0 and rouge_l([], [1]) == 0.0
    assert rouge_l([1, 2, 3, 4], [1, 3, 4, 5]) == pytest.approx(0.75)  # LCS 3 of 4 and 4
    assert first_sentence("The milk is in the kitchen. John left it.") == "The milk is in the kitchen"
    assert first_sentence("kitchen\nbecause") == "kitchen"


def _load_script():
    spec = importlib.util.spec_from_file_location("build_generation_traces",
                                                  ROOT / "train" / "build_generation_traces.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_build_runs_end_to_end_on_a_tiny_pair_and_resumes_what_it_finished(tmp_path):
    from tiny_lm import make_tiny_llama

    from mec_env.spec.tokens import TokenTraceSource

    make_tiny_llama(tmp_path / "llm")
    babi = tmp_path / "babi"
    shutil.copytree(ROOT / "tests" / "fixtures" / "babi" / "en", babi)
    for test in list(babi.glob("qa1_*_test.txt")) + list(babi.glob("qa2_*_test.txt")):
        shutil.copy(test, test.with_name(test.name.replace("_test", "_train")))  # a train split to distil on
    module = _load_script()
    ship = tmp_path / "ship" / "spec_tokens_generations.csv"
    args = ["--babi", str(babi), "--work-dir", str(tmp_path / "work"), "--verifier", str(tmp_path / "llm"),
            "--prompts", "6", "--train-prompts", "4", "--max-new-tokens", "6", "--batch-size", "4",
            "--hidden", "4", "--layers", "1", "--heads", "1", "--intermediate", "8", "--drafter-steps", "4",
            "--train-batch", "2", "--checkpoint-steps", "2", "--drafter-fraction", "2", "--threads", "1", "--ship",
            "--ship-to", str(ship)]
    report = module.main(args)
    assert report["generations"] == 6 and report["token_rows"] >= 6
    assert 0.0 <= report["acceptance_rate"] <= 1.0
    source = TokenTraceSource(ship)  # the shipped pair loads, with its manifest's counts and sizes
    manifest = json.loads(ship.with_name("spec_tokens_generations.manifest.json").read_text())
    assert manifest["token_rows"] == int(source.length.sum()) and len(source) == 6
    assert source.model_parameters == (manifest["drafter"]["parameters"], manifest["verifier"]["parameters"])
    assert (source.prompt_tokens > 0).all()
    # a rerun after a loss: the missing generation batch and trace batch are made again, to the same rows
    tables = ship.read_text(), ship.with_name("spec_answers_generations.csv").read_text()
    work = tmp_path / "work"
    next(work.glob("generations-test-*/batch-0001.json")).unlink()
    next(work.glob("traces-*/traces-0001.json")).unlink()
    module.main(args)
    assert (ship.read_text(), ship.with_name("spec_answers_generations.csv").read_text()) == tables


@pytest.mark.slow
def test_the_drafters_training_killed_after_a_checkpoint_resumes_to_the_uninterrupted_weights(tmp_path,
                                                                                              child_processes):
    """The drafter stage in a subprocess, killed (SIGKILL) once a checkpoint is on disk, then rerun: the same final
    weights as one uninterrupted run, and the progress bar on stderr."""
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file
    from tiny_lm import make_tiny_llama

    make_tiny_llama(tmp_path / "llm")
    babi = tmp_path / "babi"
    shutil.copytree(ROOT / "tests" / "fixtures" / "babi" / "en", babi)
    for test in babi.glob("qa1_*_test.txt"):
        shutil.copy(test, test.with_name(test.name.replace("_test", "_train")))

    def command(work: Path) -> list[str]:
        return [sys.executable, str(ROOT / "train" / "build_generation_traces.py"), "--stage", "drafter", "--babi",
                str(babi), "--work-dir", str(work), "--verifier", str(tmp_path / "llm"), "--train-prompts", "4",
                "--max-new-tokens", "6", "--batch-size", "4", "--hidden", "8", "--layers", "2", "--heads", "2",
                "--intermediate", "16", "--drafter-steps", "1000", "--train-batch", "2", "--checkpoint-steps", "50",
                "--drafter-fraction", "20", "--threads", "1"]

    subprocess.run(command(tmp_path / "whole"), check=True, capture_output=True)
    proc = subprocess.Popen(command(tmp_path / "cut"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child_processes.append(proc)
    t0 = time.monotonic()
    while not list((tmp_path / "cut").glob("drafter-*/checkpoint.pt")):
        assert proc.poll() is None and time.monotonic() - t0 < 120, "no checkpoint before the run ended"
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert not list((tmp_path / "cut").glob("drafter-*/training.json"))  # it was cut before the end
    again = subprocess.run(command(tmp_path / "cut"), check=True, capture_output=True, text=True)
    assert "drafter (distillation)" in again.stderr  # tqdm's bar, resumed part-way
    whole, cut = (load_file(next((tmp_path / w).glob("drafter-*/model.safetensors"))) for w in ("whole", "cut"))
    assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole)
