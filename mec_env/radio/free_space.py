"""Free-space (Friis) path loss, the paper's default large-scale model: (c / (4 pi f d))^2."""

from mec_env.radio import PathLoss, register_path_loss
from mec_env.radio.link import free_space_gain

FREE_SPACE = register_path_loss(PathLoss("free_space", free_space_gain))
