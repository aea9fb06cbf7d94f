"""3GPP TR 38.901 UMi street canyon complete: LOS probability, LOS/NLOS path loss with the
breakpoint distance, and log-normal shadow fading: ``path_loss: 3gpp_umi_los``.

- LOS probability (Table 7.4.2-1): 1 for d2D <= 18 m, else 18/d2D + exp(-d2D/36) (1 - 18/d2D).
- PL_LOS (Table 7.4.1-1): PL1 = 32.4 + 21 log10 d3D + 20 log10 fGHz up to the breakpoint
  d'BP = 4 h'BS h'UT fc / c (effective heights h' = h - 1 m), PL2 = 32.4 + 40 log10 d3D
  + 20 log10 fGHz - 9.5 log10(d'BP^2 + (hBS - hUT)^2) beyond it.
- PL_NLOS = max(PL_LOS, 35.3 log10 d3D + 22.4 + 21.3 log10 fGHz) (hUT = 1.5 m: no height term).
- Shadow fading: log-normal, sigma_SF = 4 dB (LOS), 7.82 dB (NLOS).

The LOS state and the shadowing are drawn per user-ES link at each large-scale draw (a slot of
the query-level envs); their product with the deterministic NLOS gain is the link's path gain.
Where users move within a draw (mobility), the draw's LOS state and shadowing stay with the link
and only the deterministic NLOS gain follows the distance (a walk of a few metres per slot is
within the correlation distances of Table 7.5-6: 10 m shadowing, 50 m LOS state).
"""

import math

import numpy as np

from mec_env.radio import PathLoss, register_path_loss
from mec_env.radio.link import SPEED_OF_LIGHT
from mec_env.radio.umi import BS_HEIGHT_M, UT_HEIGHT_M, d3d

SIGMA_SF_LOS_DB = 4.0
SIGMA_SF_NLOS_DB = 7.82
ENV_HEIGHT_M = 1.0  # h_E of UMi: effective antenna heights h' = h - h_E
SHADOW_MAX_SIGMAS = 8.0  # a shadow gain above 8 sigma has probability ~6e-16: the bound the config checks assume


def los_probability(distance_m):
    """Pr_LOS of Table 7.4.2-1 (UMi street canyon) at 2D distances."""
    d = np.maximum(np.asarray(distance_m, dtype=np.float64), 1e-300)
    p = 18.0 / d + np.exp(-d / 36.0) * (1.0 - 18.0 / d)
    return np.where(d <= 18.0, 1.0, p)


def breakpoint_m(carrier_hz):
    """d'BP = 4 h'BS h'UT fc / c."""
    return 4.0 * (BS_HEIGHT_M - ENV_HEIGHT_M) * (UT_HEIGHT_M - ENV_HEIGHT_M) * carrier_hz / SPEED_OF_LIGHT


def pl_los_db(distance_m, carrier_hz):
    """PL_UMi-LOS (dB) with the breakpoint (Table 7.4.1-1)."""
    d3 = d3d(distance_m)
    fg = 20.0 * math.log10(carrier_hz / 1e9)
    bp = breakpoint_m(carrier_hz)
    pl1 = 32.4 + 21.0 * np.log10(d3) + fg
    pl2 = 32.4 + 40.0 * np.log10(d3) + fg - 9.5 * math.log10(bp**2 + (BS_HEIGHT_M - UT_HEIGHT_M) ** 2)
    return np.where(np.asarray(distance_m) <= bp, pl1, pl2)


def pl_nlos_db(distance_m, carrier_hz):
    """PL_UMi-NLOS (dB) = max(PL_LOS, PL'_NLOS)."""
    pl_prime = 35.3 * np.log10(d3d(distance_m)) + 22.4 + 21.3 * math.log10(carrier_hz / 1e9)
    return np.maximum(pl_los_db(distance_m, carrier_hz), pl_prime)


def nlos_gain(distance_m, carrier_hz):
    """The deterministic part: linear gain of the NLOS path loss."""
    return 10.0 ** (-pl_nlos_db(distance_m, carrier_hz) / 10.0)


def draw_los_and_shadowing(rng, distance_m, carrier_hz):
    """One large-scale draw per link: ``(los, shadow_db)``, LOS state then shadowing (dB, signed as a loss)."""
    los = rng.random(np.shape(distance_m)) < los_probability(distance_m)
    shadow_db = rng.standard_normal(np.shape(distance_m)) * np.where(los, SIGMA_SF_LOS_DB, SIGMA_SF_NLOS_DB)
    return los, shadow_db


def draw_factor(rng, distance_m, carrier_hz):
    """The drawn link's gain over :func:`nlos_gain`: 10^(-(PL_state + X_SF - PL_NLOS) / 10)."""
    los, shadow_db = draw_los_and_shadowing(rng, distance_m, carrier_hz)
    state_db = np.where(los, pl_los_db(distance_m, carrier_hz), pl_nlos_db(distance_m, carrier_hz))
    return 10.0 ** (-(state_db + shadow_db - pl_nlos_db(distance_m, carrier_hz)) / 10.0)


# the largest factor: a LOS link at the distance floor (at most the NLOS-LOS gap, bounded by 40 dB here)
# with an 8 sigma shadow gain
UMI_LOS = register_path_loss(PathLoss("3gpp_umi_los", nlos_gain, draw_factor,
                                      factor_max=10.0 ** ((40.0 + SHADOW_MAX_SIGMAS * SIGMA_SF_NLOS_DB) / 10.0)))
