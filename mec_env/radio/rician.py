"""Rician small-scale fading with K-factor ``rician_k_db`` (config): ``fading: rician``.

h = sqrt(K / (K + 1)) + sqrt(1 / (K + 1)) CN(0, 1), so E|h|^2 = 1; K = 0 (``rician_k_db = -inf``)
is Rayleigh, |h|^2 ~ Exp(1), in distribution (a different draw from the Rayleigh module's).
"""

import math


from mec_env.radio import Fading, register_fading
from mec_env.radio.link import fading_power


def amplitudes(k_linear: float) -> tuple[float, float]:
    """(LOS amplitude, scattered amplitude) of unit-mean Rician fading with K = ``k_linear``."""
    if math.isinf(k_linear):
        return 1.0, 0.0
    return math.sqrt(k_linear / (k_linear + 1.0)), math.sqrt(1.0 / (k_linear + 1.0))


def k_linear(cfg) -> float:
    return 10.0 ** (cfg.rician_k_db / 10.0)


def draw_k(rng, shape, k):
    """|h|^2 of unit-mean Rician fading with linear K-factor ``k``."""
    los, scatter = amplitudes(k)
    parts = rng.standard_normal((2,) + tuple(shape)) * math.sqrt(0.5)  # CN(0, 1): parts N(0, 1/2)
    return fading_power(los, scatter, parts[0], parts[1])


def draw(rng, shape, cfg):
    return draw_k(rng, shape, k_linear(cfg))


RICIAN = register_fading(Fading("rician", draw, amplitudes=lambda cfg: amplitudes(k_linear(cfg))))
