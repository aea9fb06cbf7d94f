"""3GPP TR 38.901 UMi street canyon, NLOS path loss (Table 7.4.1-1) without shadowing: ``3gpp_umi``.

PL_NLOS = max(PL_LOS, 35.3 log10 d3D + 22.4 + 21.3 log10 fGHz - 0.3 (hUT - 1.5)),
PL_LOS = 32.4 + 21 log10 d3D + 20 log10 fGHz (the breakpoint distance is not modelled: beyond it
the LOS formula is replaced, which NLOS dominates at these distances), hBS = 10 m, hUT = 1.5 m.
"""

import math

import numpy as np

from mec_env.radio import PathLoss, register_path_loss

BS_HEIGHT_M = 10.0
UT_HEIGHT_M = 1.5


def d3d(distance_m):
    """3D distance from the 2D one with the UMi antenna heights."""
    return np.sqrt(distance_m**2 + (BS_HEIGHT_M - UT_HEIGHT_M) ** 2)


def pl_los_db(distance_m, carrier_hz):
    """PL_LOS (dB), Table 7.4.1-1 (PL1 below the breakpoint)."""
    return 32.4 + 21.0 * np.log10(d3d(distance_m)) + 20.0 * math.log10(carrier_hz / 1e9)


def pl_nlos_db(distance_m, carrier_hz):
    """PL_UMi-NLOS (dB) = max(PL_LOS, PL'_NLOS), Table 7.4.1-1 (hUT = 1.5 m: no height term)."""
    pl_prime = 35.3 * np.log10(d3d(distance_m)) + 22.4 + 21.3 * math.log10(carrier_hz / 1e9)
    return np.maximum(pl_los_db(distance_m, carrier_hz), pl_prime)


def nlos_gain(distance_m, carrier_hz):
    """Linear gain of the NLOS path loss."""
    return 10.0 ** (-pl_nlos_db(distance_m, carrier_hz) / 10.0)


UMI_NLOS = register_path_loss(PathLoss("3gpp_umi", nlos_gain))
