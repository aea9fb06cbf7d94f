"""Rayleigh small-scale fading, the default: |h|^2 ~ Exp(1) (the draw the paper's Monte Carlo makes)."""

from mec_env.radio import Fading, register_fading


def draw(rng, shape, cfg=None):
    return rng.exponential(1.0, size=shape)


RAYLEIGH = register_fading(Fading("rayleigh", draw))
