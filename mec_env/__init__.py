"""MECOffload: uncertainty-aware LLM offloading at the mobile edge (simulator and RL benchmark)."""

from mec_env.config import QueryConfig, ScenarioConfig, load_scenario
from mec_env.errors import AssignmentError, ConfigError, MECOffloadError
from mec_env.evaluator import Evaluation, evaluate, objective
from mec_env.problem import Problem, sample_problem

__all__ = ["ScenarioConfig", "QueryConfig", "load_scenario", "ConfigError", "AssignmentError", "MECOffloadError",
           "Evaluation", "evaluate", "objective", "Problem", "sample_problem"]
__version__ = "0.1.0"
from mec_env import registration as _registration  # noqa: F401,E402  (registers the Gymnasium ids)
