"""PWC-Net-style coarse-to-fine flow estimator over the encoder pyramid (DESIGN.md 1.2)."""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import LayerNorm2d

from mcjepa_cli.models.config import DECODER_NORMS, FlowHeadConfig
from mcjepa_cli.models.layers import cost_volume, resize_flow, warp


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last when ``x`` is laid out channels-last (and not also plain contiguous)."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _standardise(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each (B, C, h, w) feature vector to zero mean and unit variance over its C channels."""
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, keepdim=True, unbiased=False)
    return (x - mean) * torch.rsqrt(var + eps)


class FlowDecoder(nn.Module):
    """Reads [cost volume, projected first-frame features, upsampled flow] -> residual flow.

    ``norm="layernorm"``: LayerNorm after every conv but the last (the paper found training
    collapses without it); ``"none"``: no normalisation.
    """

    def __init__(self, in_channels: int, widths: list[int], norm: str = "layernorm") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for wdt in widths:
            layers.append(nn.Conv2d(c, wdt, 3, padding=1))
            if norm == "layernorm":
                layers.append(LayerNorm2d(wdt))
            layers.append(nn.LeakyReLU(0.1))
            c = wdt
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(c, 2, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # start from "no residual": flow = upsampled flow
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class FlowHead(nn.Module):
    """Estimate flow from frame-1 to frame-2 pyramids, coarsest level first.

    Contract: ``forward(p1, p2)`` takes two lists of pyramid features (finest first, strides
    ``encoder_strides``) and returns a list of flows, coarsest first, one per stride in
    ``cfg.strides``; each flow is (B, 2, h_l, w_l) in pixels *of its own level*.
    """

    def __init__(self, cfg: FlowHeadConfig, encoder_channels: tuple[int, ...],
                 encoder_strides: tuple[int, ...]) -> None:
        super().__init__()
        strides = list(cfg.strides)
        if cfg.decoder_norm not in DECODER_NORMS:
            raise ValueError(f"model.flow_head.decoder_norm must be one of {DECODER_NORMS}, got {cfg.decoder_norm!r}")
        if sorted(strides, reverse=True) != strides or len(set(strides)) != len(strides):
            raise ValueError(f"model.flow_head.strides must be strictly decreasing, got {strides}")
        for s in strides:
            if s not in encoder_strides:
                raise ValueError(
                    f"model.flow_head.strides: {s} is not an encoder stride {list(encoder_strides)}"
                )
        self.cfg = cfg
        self.strides = strides
        self.level_index = [encoder_strides.index(s) for s in strides]
        p = cfg.proj_channels
        self.proj = nn.ModuleList(
            nn.Conv2d(encoder_channels[i], p, kernel_size=1) for i in self.level_index
        )
        in_ch = (2 * cfg.radius + 1) ** 2 + p + 2
        n_dec = 1 if cfg.share_decoder else len(strides)
        self.decoders = nn.ModuleList(FlowDecoder(in_ch, list(cfg.decoder_channels), cfg.decoder_norm) for _ in range(n_dec))

    def forward(self, p1: list[torch.Tensor], p2: list[torch.Tensor]) -> list[torch.Tensor]:
        ac = self.cfg.align_corners
        flows: list[torch.Tensor] = []
        flow: torch.Tensor | None = None
        for k, (li, stride) in enumerate(zip(self.level_index, self.strides)):
            f1 = self.proj[k](p1[li])  # (B, P, h, w)
            f2 = self.proj[k](p2[li])
            if self.cfg.normalize_features:
                f1, f2 = _standardise(f1), _standardise(f2)
            b, _, h, w = f1.shape
            if flow is None:
                # zeros in f1's memory format, so that the decoder input stays channels-last
                # when the model runs channels-last (torch.cat falls back to NCHW on a mix)
                up = f1.new_zeros(b, 2, h, w).contiguous(memory_format=_memory_format(f1))
            else:
                up = resize_flow(flow, (h, w), align_corners=ac)
            f2w = warp(f2, up, align_corners=ac) if flow is not None else f2
            corr = cost_volume(f1, f2w, self.cfg.radius)  # (B, (2r+1)^2, h, w)
            dec = self.decoders[0 if self.cfg.share_decoder else k]
            # the decoder reads and writes flow in units of ``flow_unit`` input pixels, the same at
            # every level; the pyramid keeps each level's flow in that level's pixels
            to_unit = stride / self.cfg.flow_unit
            flow = up + dec(torch.cat((corr, f1, up * to_unit), dim=1)) / to_unit
            lim = self.cfg.max_flow / stride  # +-max_flow px at input resolution
            flow = flow.clamp(-lim, lim)
            flows.append(flow)
        return flows
