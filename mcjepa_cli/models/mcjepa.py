"""MC-JEPA: one pyramid encoder shared by a PWC-style flow head and a VICReg expander.

Images enter as float (B, 3, H, W) in [0, 1]; the encoder normalises them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mcjepa_cli.models.config import ModelConfig
from mcjepa_cli.models.encoder import PyramidEncoder
from mcjepa_cli.models.expander import build_expander
from mcjepa_cli.models.flow_head import FlowHead
from mcjepa_cli.models.layers import resize_flow


@dataclass
class PreparedFrame:
    """A frame padded to the coarsest stride with its pyramid computed once (video reuse)."""

    pyramid: list[torch.Tensor]
    size: tuple[int, int]  # original (H, W)
    padded_size: tuple[int, int]
    pad: tuple[int, int, int, int]  # (left, right, top, bottom)


def pad_to_multiple(
    x: torch.Tensor, multiple: int, min_side: int = 1
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Replicate-pad (B, C, H, W) so both sides are multiples of ``multiple`` (split evenly)
    and at least ``min_side`` (rounded up to the multiple)."""
    h, w = x.shape[-2:]
    floor = -(-min_side // multiple) * multiple
    ph = max((-h) % multiple, floor - h)
    pw = max((-w) % multiple, floor - w)
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    if ph == 0 and pw == 0:
        return x, pad
    return F.pad(x, pad, mode="replicate"), pad


class MCJEPA(nn.Module):
    """The MC-JEPA network.

    Public API:
        ``features(img)`` -> list of 6 pyramid levels, finest first (strides 2..64).
        ``estimate_flow(img1, img2)`` -> (B, 2, H, W) flow in pixels at input resolution.
        ``prepare_frame(img)`` / ``flow_between(p1, p2)``: the same with per-frame reuse.
        ``embed(img)`` -> VICReg embedding of the pooled stride-32 level (needs ``content``).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = PyramidEncoder(cfg.encoder)
        self.flow_head = FlowHead(cfg.flow_head, self.encoder.channels, self.encoder.strides)
        self.content_level = self.encoder.strides.index(32)
        self.expander = (
            build_expander(self.encoder.channels[self.content_level], list(cfg.expander.dims))
            if cfg.content
            else None
        )

    @property
    def feature_strides(self) -> tuple[int, ...]:
        return self.encoder.strides

    @property
    def feature_channels(self) -> tuple[int, ...]:
        return self.encoder.channels

    @property
    def pad_multiple(self) -> int:
        """Flow inputs are padded to the coarsest stride the flow head reads (not beyond:
        replicate padding changes the coarse features and costs accuracy)."""
        return max(self.flow_head.strides)

    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """Pyramid features of (B, 3, H, W) images in [0, 1], finest first."""
        return self.encoder(img)

    def embed(self, img: torch.Tensor) -> torch.Tensor:
        """(B, D) expander output for (B, 3, H, W) images (global average of the stride-32 level)."""
        if self.expander is None:
            raise RuntimeError("this model has no content branch (model.content: false)")
        pooled = self.encoder(img, self.content_level + 1)[self.content_level].mean(dim=(2, 3))
        return self.expander(pooled)

    def flow_pyramid(self, p1: list[torch.Tensor], p2: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-level flows (coarsest first, each in its level's pixels) from two pyramids."""
        return self.flow_head(p1, p2)

    def upsample_to_input(self, flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Bilinearly upsample the finest level's flow to ``size``, scaling its values."""
        return resize_flow(flow, size, align_corners=self.cfg.flow_head.align_corners)

    def prepare_frame(self, img: torch.Tensor) -> PreparedFrame:
        """Pad ``img`` to the coarsest stride and compute its pyramid once.

        Frames smaller than the coarsest encoder level (64 px) are padded up to it, so that
        every level has at least one cell."""
        h, w = img.shape[-2:]
        x, pad = pad_to_multiple(img, self.pad_multiple, max(self.feature_strides))
        return PreparedFrame(self.encoder(x), (h, w), tuple(x.shape[-2:]), pad)

    def flow_between(self, p1: PreparedFrame, p2: PreparedFrame) -> torch.Tensor:
        """(B, 2, H, W) flow from frame ``p1`` to frame ``p2`` at the original resolution."""
        if p1.padded_size != p2.padded_size:
            raise ValueError(f"frames differ in size: {p1.size} vs {p2.size}")
        flow = self.flow_head(p1.pyramid, p2.pyramid)[-1]
        flow = self.upsample_to_input(flow, p1.padded_size)
        left, _, top, _ = p1.pad
        h, w = p1.size
        return flow[:, :, top : top + h, left : left + w]

    def estimate_flow(self, img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) optical flow from ``img1`` to ``img2`` in pixels, any input size."""
        if img1.shape != img2.shape:
            raise ValueError(f"image shapes differ: {tuple(img1.shape)} vs {tuple(img2.shape)}")
        b = img1.shape[0]
        both = self.prepare_frame(torch.cat((img1, img2), 0))  # one encoder pass for both
        p1 = [f[:b] for f in both.pyramid]
        p2 = [f[b:] for f in both.pyramid]
        flow = self.upsample_to_input(self.flow_head(p1, p2)[-1], both.padded_size)
        left, _, top, _ = both.pad
        h, w = both.size
        return flow[:, :, top : top + h, left : left + w]
