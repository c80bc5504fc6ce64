"""Models: the MC-JEPA network and its parts (encoder, flow head, expander)."""

from mcjepa_cli.models.config import EncoderConfig, ExpanderConfig, FlowHeadConfig, ModelConfig
from mcjepa_cli.models.mcjepa import MCJEPA, PreparedFrame


def build_model(cfg: ModelConfig) -> MCJEPA:
    """Build an MC-JEPA network from its typed config (random initialisation)."""
    return MCJEPA(cfg)


__all__ = [
    "MCJEPA",
    "EncoderConfig",
    "ExpanderConfig",
    "FlowHeadConfig",
    "ModelConfig",
    "PreparedFrame",
    "build_model",
]
