"""Losses: one function per term, combined into named terms by ``objective``."""

from mcjepa_cli.losses.objective import LossConfig, content_objective, flow_objective, mcjepa_objective
from mcjepa_cli.losses.occlusion import occlusion_mask
from mcjepa_cli.losses.photometric import census_distance, photometric_distance, ssim_distance
from mcjepa_cli.losses.regression import cycle_loss, feature_regression_loss
from mcjepa_cli.losses.smoothness import smoothness_loss
from mcjepa_cli.losses.vc import feature_vc_loss
from mcjepa_cli.losses.vicreg import covariance_term, variance_term, vicreg_loss

__all__ = [
    "LossConfig",
    "census_distance",
    "content_objective",
    "covariance_term",
    "cycle_loss",
    "feature_regression_loss",
    "feature_vc_loss",
    "flow_objective",
    "mcjepa_objective",
    "occlusion_mask",
    "photometric_distance",
    "smoothness_loss",
    "ssim_distance",
    "variance_term",
    "vicreg_loss",
]
