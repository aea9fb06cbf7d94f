"""Named, disjoint seed ranges: which episodes train a policy, which pick it, which score it.

Every episode seed a script uses comes from one of four ranges (values as the project has always used,
so earlier results reproduce):

- ``TRAINING`` [0, 10,000): training environments (env k of a run seeded ``seed + k``), a resumed run's
  reseeding (:func:`resumed_seed`), behaviour cloning's expert episodes (``seed + k``).
- ``EVALUATION`` [10,000, 20,000): the evaluations during training and tuning that select a model (best
  checkpoint, U-HLM's tuned budget, ASHA's reports): ``10,000 + k``.
- ``HELD_OUT`` [20,000, 30,000): the final tables (``train/evaluate.py``, ``train/transfer.py``, the
  comparisons after training): ``20,000 + k``; never seen by training or selection.
- ``VALIDATION`` [30,000, 40,000): behaviour cloning's validation episodes and the demonstrations of the
  token-level warm start (a strategy's rollouts kept off the RL training seeds): ``30,000 + k``.

A request that would leave its range raises :class:`~mec_env.errors.ConfigError` naming the config field
that asked for it, so no setting can make an evaluation replay a training episode.
"""

from __future__ import annotations

from dataclasses import dataclass

from mec_env.errors import ConfigError


@dataclass(frozen=True)
class SeedRange:
    """The seeds ``start, start + 1, ..., stop - 1`` reserved for one use."""

    name: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    def __contains__(self, seed: object) -> bool:
        return isinstance(seed, int) and self.start <= seed < self.stop

    def seeds(self, count: int, field: str, first: int | None = None) -> list[int]:
        """``count`` consecutive seeds from ``first`` (default ``start``), all inside the range.

        :raises ConfigError: naming ``field`` when they would leave it.
        """
        first = self.start if first is None else first
        if not (isinstance(count, int) and count >= 0 and first in self and first + count <= self.stop):
            raise ConfigError(field, count, f"{self.name} seeds {first} + k for k < {field} inside the {self.name} "
                              f"range [{self.start}, {self.stop}): {field} <= {max(self.stop - first, 0)}",
                              kind="seeds out of range")
        return list(range(first, first + count))


TRAINING = SeedRange("training", 0, 10_000)
EVALUATION = SeedRange("evaluation", 10_000, 20_000)
HELD_OUT = SeedRange("held-out", 20_000, 30_000)
VALIDATION = SeedRange("validation", 30_000, 40_000)
RANGES = (TRAINING, EVALUATION, HELD_OUT, VALIDATION)


def training_seeds(seed: int, count: int, field: str = "seed") -> list[int]:
    """``seed + k`` for ``k < count`` (a run's ``count`` environments or expert episodes), inside ``TRAINING``.

    :raises ConfigError: naming ``field`` (the run's ``seed``) when ``seed + count`` passes the range's end.
    """
    if not (isinstance(seed, int) and seed in TRAINING and seed + count <= TRAINING.stop):
        raise ConfigError(field, seed, f"{TRAINING.start} .. {TRAINING.stop - count}: the training seeds seed + k "
                          f"for k < {count} stay inside the training range [{TRAINING.start}, {TRAINING.stop})",
                          kind="seeds out of range")
    return list(range(seed, seed + count))


def resumed_seed(seed: int, num_timesteps: int, n_envs: int) -> int:
    """The first seed of a run resumed after ``num_timesteps`` steps (its envs get ``+ k``, k < ``n_envs``):
    ``seed + num_timesteps``, wrapped so that all ``n_envs`` seeds stay inside ``TRAINING``. A fresh run
    (``num_timesteps = 0``) keeps ``seed``; a resumed one does not replay the seeds it started from."""
    training_seeds(seed, n_envs)
    span = TRAINING.size - n_envs + 1  # first seeds whose n_envs seeds fit
    return TRAINING.start + (seed - TRAINING.start + num_timesteps) % span


def evaluation_seeds(count: int, field: str = "eval_seeds") -> list[int]:
    """The ``count`` evaluation episodes of model selection: ``10,000 + k``."""
    return EVALUATION.seeds(count, field)


def held_out_seeds(count: int, field: str = "final_eval_seeds") -> list[int]:
    """The ``count`` held-out episodes of a final table: ``20,000 + k``."""
    return HELD_OUT.seeds(count, field)


def validation_seeds(count: int, field: str = "valid_episodes") -> list[int]:
    """The ``count`` validation episodes (behaviour cloning, warm-start demonstrations): ``30,000 + k``."""
    return VALIDATION.seeds(count, field)


__all__ = ["SeedRange", "TRAINING", "EVALUATION", "HELD_OUT", "VALIDATION", "RANGES", "training_seeds",
           "resumed_seed", "evaluation_seeds", "held_out_seeds", "validation_seeds"]
