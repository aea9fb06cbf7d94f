"""The link-level physics of eqs. 2-7, written once for numpy arrays and numba kernels alike.

Every function here uses only operations numpy and numba both support, so the numpy evaluator
(:mod:`mec_env.evaluator`) calls it on arrays and the compiled kernels (:mod:`mec_env.kernels`,
:mod:`baselines.local_search`, :mod:`mec_env.queues`) on scalars; ``jitable`` registers it with
numba (``register_jitable``) so a kernel inlines it. The operation order is the one the
fingerprint tests recorded: do not reassociate.

Interference models (eq. 3) are declared here once, name -> code, in ``INTERFERENCE_MODELS``.
"""

from __future__ import annotations

import numpy as np

try:  # pragma: no cover - exercised by whichever path is installed
    from numba.extending import register_jitable as jitable
except ImportError:  # pragma: no cover
    def jitable(fn):
        return fn

SPEED_OF_LIGHT = 299_792_458.0  # m/s
LN2 = float(np.log(2.0))

# interference a user offloaded to ES e adds at another ES j (eq. 3), by model: the code kernels switch on
INTERFERENCE_MODELS = {
    "physical": 0,  # its power received at ES j, P |h_ij|^2 (default)
    "paper": 1,  # eq. 3 as printed, P |h_ie|^2 (its gain to its own ES)
    "none": 2,  # no interference
}


@jitable
def interference_added(model_code, tx_power_w, gain_to_es, gain_to_own_es):
    """Power (W) a user offloaded to its own ES adds at another ES under interference model ``model_code``.

    The caller skips the user's own ES: users sharing an ES split its band and do not interfere."""
    if model_code == 0:
        return tx_power_w * gain_to_es
    if model_code == 1:
        return tx_power_w * gain_to_own_es
    return 0.0 * gain_to_es


@jitable
def sinr(tx_power_w, gain, interference_w, noise_power_w):
    """Signal to interference plus noise ratio of eq. 3."""
    return tx_power_w * gain / (interference_w + noise_power_w)


@jitable
def spectral_efficiency(sinr_value):
    """log2(1 + SINR), bit/s/Hz."""
    return np.log1p(sinr_value) / LN2


@jitable
def uplink_rate(bandwidth_share_hz, sinr_value, min_rate_bps):
    """Eq. 2: the user's band share times log2(1 + SINR), floored at ``min_rate_bps`` (an underflowed rate)."""
    return np.maximum(bandwidth_share_hz * spectral_efficiency(sinr_value), min_rate_bps)


@jitable
def compute_share(c_max, es_capacity, n_sharing):
    """Eq. 6: the ES compute a user gets, min(C_max, C_j / n_j)."""
    return np.minimum(c_max, es_capacity / n_sharing)


@jitable
def floored_distance(dx, dy, min_distance_m):
    """Horizontal distance sqrt(dx^2 + dy^2), floored at the path-loss model's ``min_distance_m``."""
    return np.maximum(np.sqrt(dx * dx + dy * dy), min_distance_m)


@jitable
def free_space_gain(distance_m, carrier_hz):
    """Friis: (c / (4 pi f d))^2, linear."""
    x = SPEED_OF_LIGHT / (4.0 * np.pi * carrier_hz * distance_m)
    return x * x


@jitable
def fading_power(los_amplitude, scatter_amplitude, re, im):
    """|h|^2 of h = los + scatter (re + j im): Rician with a LOS amplitude, Rayleigh with (0, 1)."""
    a = los_amplitude + scatter_amplitude * re
    b = scatter_amplitude * im
    return a * a + b * b
