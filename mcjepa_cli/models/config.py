"""Typed model hyper-parameters (nested in the recipe as ``model.*``)."""

from __future__ import annotations

from dataclasses import dataclass, field


# Normalisations the flow decoder offers after each conv (``model.flow_head.decoder_norm``).
DECODER_NORMS: tuple[str, ...] = ("layernorm", "none")


@dataclass
class EncoderConfig:
    """The pyramid encoder: a timm ConvNeXt with a split stem and one extra coarse level."""

    arch: str = "convnext_atto"  # any timm ConvNeXt: convnext_atto/femto/pico/nano/tiny/small/...
    # Channels of the stride-2 level (between the two 2x2 stem convolutions). At least 12, so
    # that timm's 4x4/stride-4 stem factorises exactly into the pair (DESIGN.md section 6).
    # null = half of the first stage's width.
    stem_channels: int | None = None
    # Channels of the stride-64 level (one more downsampling + one ConvNeXt block).
    # null = the last stage's width.
    extra_channels: int | None = None
    drop_path_rate: float = 0.0
    # A local timm ConvNeXt state dict (.pth/.pt/.safetensors) to start from; null = random.
    init: str | None = None


@dataclass
class FlowHeadConfig:
    """PWC-style coarse-to-fine flow estimator over the pyramid (DESIGN.md 1.2)."""

    # Pyramid strides at which flow is estimated, coarsest first. The finest one's flow is
    # upsampled bilinearly to the input resolution.
    strides: list[int] = field(default_factory=lambda: [64, 32, 16, 8, 4])
    # Features are projected (1x1 conv) to this many channels before the cost volume.
    proj_channels: int = 32
    radius: int = 4  # cost-volume search radius: (2r+1)^2 = 81 channels
    # Standardise each projected feature vector over its channels (zero mean, unit variance,
    # no affine) before the cost volume, so every correlation is a Pearson coefficient in
    # [-1, 1]: without it the raw dot products of young features are ~100x smaller than the
    # decoder's other inputs and flow barely starts to learn.
    normalize_features: bool = True
    # Widths of the residual-flow decoder's 3x3 convs (``decoder_norm`` + LeakyReLU after each).
    decoder_channels: list[int] = field(default_factory=lambda: [96, 64, 32])
    # Normalisation after each decoder conv: "layernorm" (per position, over channels) or
    # "none". Measured on CPU: with per-position LayerNorm the decoder needs far longer to learn
    # to read the cost volume (even under supervision) than without.
    decoder_norm: str = "layernorm"
    share_decoder: bool = True  # one decoder for every level (inputs are projected to one width)
    # Decoder outputs (and the flow it reads back) are in units of this many input pixels at
    # every level: a level-pixel output would move the stride-32 level's flow 8x further per
    # optimiser step than the stride-4 level's, and a shared decoder could not learn both.
    flow_unit: float = 4.0
    max_flow: float = 128.0  # flow clipped to +-max_flow px at input resolution (paper)
    align_corners: bool = False  # passed explicitly to every grid_sample / interpolate


@dataclass
class ExpanderConfig:
    """VICReg expander on the globally pooled stride-32 level (paper: 8192-8192-8192)."""

    dims: list[int] = field(default_factory=lambda: [8192, 8192, 8192])


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    flow_head: FlowHeadConfig = field(default_factory=FlowHeadConfig)
    expander: ExpanderConfig = field(default_factory=ExpanderConfig)
    content: bool = True  # false = flow-only (M-JEPA ablation): no expander is built
    # An mcjepa checkpoint (a .pt file, a run directory or latest) whose weights start a new
    # run (`pretrain --init`): encoder exactly, flow head and expander where they fit; the
    # optimiser, schedule and step start afresh. null = random (or model.encoder.init).
    init: str | None = None
