"""Six-level pyramid encoder on timm's ConvNeXt with a split stem (MC-JEPA, DESIGN.md 1.1).

timm's 4x4/stride-4 stem convolution is replaced by two linear 2x2/stride-2 convolutions
(``stem_a``: 3 -> stem_channels, ``stem_b``: stem_channels -> dims[0]); their composition is
again a 4x4/stride-4 convolution, so the pair folds exactly into timm's stem for export and a
timm stem factorises exactly into the pair for import (see ``fold_stem`` / ``factorise_stem``).
Levels and strides: 0: stem_a (2), 1: stage 0 (4), 2: stage 1 (8), 3: stage 2 (16),
4: stage 3 (32), 5: extra downsample + ConvNeXt block (64).
"""

from __future__ import annotations

import timm
import torch
import torch.nn as nn
from timm.layers import LayerNorm2d
from timm.models.convnext import ConvNeXtBlock

from mcjepa_cli.models.config import EncoderConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PyramidEncoder(nn.Module):
    """ConvNeXt feature pyramid with strides (2, 4, 8, 16, 32, 64).

    Input: (B, 3, H, W) images in [0, 1] (normalised here with ImageNet statistics).
    Output: list of 6 feature maps, finest first; level i has spatial size
    floor(H / 2^(i+1)) x floor(W / 2^(i+1)) for inputs whose sides are multiples of 64.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        try:
            net = timm.create_model(
                cfg.arch, pretrained=False, num_classes=0, drop_path_rate=cfg.drop_path_rate
            )
        except RuntimeError as e:  # unknown model name
            raise ValueError(f"unknown timm architecture {cfg.arch!r}: {e}") from None
        if not hasattr(net, "stages") or not hasattr(net, "stem"):
            raise ValueError(f"model.encoder.arch must be a timm ConvNeXt, got {cfg.arch!r}")
        dims = [int(info["num_chs"]) for info in net.feature_info]
        stem_conv: nn.Conv2d = net.stem[0]
        if tuple(stem_conv.kernel_size) != (4, 4) or tuple(stem_conv.stride) != (4, 4):
            raise ValueError(f"{cfg.arch}: expected a 4x4/stride-4 patchify stem")
        cs = cfg.stem_channels or max(16, dims[0] // 2)
        ce = cfg.extra_channels or dims[-1]
        self.arch = cfg.arch
        self.stem_a = nn.Conv2d(3, cs, kernel_size=2, stride=2)  # linear, no activation after
        self.stem_b = nn.Conv2d(cs, dims[0], kernel_size=2, stride=2)
        self.stem_norm = net.stem[1]  # timm's stem LayerNorm (key "stem.1" in timm)
        self.stages = net.stages  # timm's stages, same keys as timm ("stages.*")
        self.extra = nn.Sequential(
            LayerNorm2d(dims[-1]),
            nn.Conv2d(dims[-1], ce, kernel_size=2, stride=2),
            ConvNeXtBlock(ce, drop_path=0.0),
        )
        self.channels: tuple[int, ...] = (cs, *dims, ce)
        self.strides: tuple[int, ...] = (2, 4, 8, 16, 32, 64)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        del net  # its head (global pool + norm) is not used by MC-JEPA

    def level_parameters(self) -> dict[str, list[nn.Parameter]]:
        """The parameters grouped by the level whose feature map they compute ("s2" .. "s64").

        Each level's map also depends on every finer group, so a group's gradient is what the
        objectives ask of that level beyond the levels below it.
        """
        groups = [list(self.stem_a.parameters()),
                  [*self.stem_b.parameters(), *self.stem_norm.parameters(),
                   *self.stages[0].parameters()],
                  *[list(stage.parameters()) for stage in list(self.stages)[1:]],
                  list(self.extra.parameters())]
        return {f"s{s}": g for s, g in zip(self.strides, groups, strict=True)}

    def forward(self, x: torch.Tensor, num_levels: int = 6) -> list[torch.Tensor]:
        """Pyramid levels 0 .. num_levels-1 (fewer levels skip the coarse computation)."""
        x = (x - self.mean) / self.std
        s2 = self.stem_a(x)  # (B, cs, H/2, W/2)
        x = self.stem_norm(self.stem_b(s2))  # (B, dims[0], H/4, W/4)
        feats = [s2]
        for stage in self.stages:
            if len(feats) >= num_levels:
                return feats
            x = stage(x)
            feats.append(x)
        if len(feats) < num_levels:
            feats.append(self.extra(x))  # (B, ce, H/64, W/64)
        return feats


def fold_stem(stem_a: nn.Conv2d, stem_b: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Compose the two 2x2/stride-2 stem convs into one 4x4/stride-4 conv (weight, bias).

    ``W[o, c, 2i + k, 2j + l] = sum_m Wb[o, m, i, j] * Wa[m, c, k, l]`` and
    ``b[o] = bb[o] + sum_{m,i,j} Wb[o, m, i, j] * ba[m]``.
    """
    wa, ba = stem_a.weight.detach(), stem_a.bias.detach()  # (M, C, 2, 2), (M,)
    wb, bb = stem_b.weight.detach(), stem_b.bias.detach()  # (O, M, 2, 2), (O,)
    w = torch.einsum("omij,mckl->ocikjl", wb, wa)  # (O, C, 2, 2, 2, 2)
    o, c = w.shape[:2]
    w = w.reshape(o, c, 4, 4)  # index (i, k) -> 2i + k, (j, l) -> 2j + l
    b = bb + torch.einsum("omij,m->o", wb, ba)
    return w, b


def factorise_stem(weight: torch.Tensor, bias: torch.Tensor, stem_channels: int) -> dict[str, torch.Tensor]:
    """Split a timm 4x4/stride-4 stem into ``stem_a`` (space-to-depth) and ``stem_b`` exactly.

    ``stem_a`` copies each (c, k, l) input tap into its own channel (needs >= 12 channels; the
    remaining channels are zero), ``stem_b`` holds the original weights rearranged.
    """
    o, c = weight.shape[:2]
    if stem_channels < 4 * c:
        raise ValueError(f"stem_channels must be >= {4 * c} to factorise a stem, got {stem_channels}")
    wa = weight.new_zeros(stem_channels, c, 2, 2)
    wb = weight.new_zeros(o, stem_channels, 2, 2)
    m = 0
    for ci in range(c):
        for k in range(2):
            for l in range(2):
                wa[m, ci, k, l] = 1.0
                for i in range(2):
                    for j in range(2):
                        wb[:, m, i, j] = weight[:, ci, 2 * i + k, 2 * j + l]
                m += 1
    return {
        "stem_a.weight": wa,
        "stem_a.bias": weight.new_zeros(stem_channels),
        "stem_b.weight": wb,
        "stem_b.bias": bias.clone(),
    }
