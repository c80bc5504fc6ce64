"""Models and training steps the figures time: ours (from a recipe) and the bare timm floor.

``OurStep`` is the body of the pretraining loop (``mcjepa_cli.engine.trainer``) without data
loading: zero the gradients, the MC-JEPA objective under autocast, the finiteness check the
trainer makes, backward, gradient clipping and the AdamW step. ``BareStep`` is the floor it is
compared with (DESIGN.md section 6): plain timm ConvNeXt forward+backward on the same images,
the same expander on the pooled views, clipping and AdamW.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import timm
import torch
import torch.nn as nn

from benchmarks.common import BenchContext
from mcjepa_cli.config import Recipe, load_recipe
from mcjepa_cli.engine.trainer import PretrainStep, param_groups
from mcjepa_cli.models import MCJEPA, build_model
from mcjepa_cli.models.expander import build_expander

# Quick (smoke-test) mode shrinks every model to this (seconds on 2 CPU cores).
QUICK_MODEL = [
    "model.encoder.arch=convnext_atto",
    "model.flow_head.proj_channels=16",
    "model.flow_head.decoder_channels=[16,16]",
    "model.flow_head.strides=[32,16,8,4]",
    "model.expander.dims=[64,64]",
]


def bench_recipe(name: str, ctx: BenchContext, overrides: list[str] | None = None) -> Recipe:
    """A packaged recipe (with the quick-mode model in ``--quick``)."""
    extra = list(overrides or [])
    if ctx.quick:
        extra = QUICK_MODEL + extra
    return load_recipe(name, extra)


def our_model(recipe: Recipe, ctx: BenchContext, *, train: bool, seed: int = 0) -> MCJEPA:
    """The recipe's model with random weights on ``ctx.device`` in ``ctx``'s memory format."""
    torch.manual_seed(seed)
    model = build_model(recipe.model).to(ctx.device, memory_format=ctx.memory_format())
    return model.train(train)


def random_images(n: int, h: int, w: int, ctx: BenchContext, seed: int) -> torch.Tensor:
    """(n, 3, h, w) uniform images in [0, 1] on the device, in ``ctx``'s memory format."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, h, w, generator=g)
    return x.to(ctx.device).contiguous(memory_format=ctx.memory_format())


@dataclass
class StepShape:
    """Batch sizes and resolutions of one pretraining step."""

    pairs: int  # frame pairs (the flow branch sees 2 * pairs images)
    flow_size: tuple[int, int]  # (H, W) of the frames
    images: int  # images of the content branch (each seen as two views)
    image_size: int  # side of the square views

    def describe(self) -> str:
        h, w = self.flow_size
        return (f"{self.pairs} pairs at {h}x{w} + {self.images} images x 2 views at "
                f"{self.image_size}x{self.image_size}")


def step_batch(shape: StepShape, ctx: BenchContext) -> dict[str, torch.Tensor]:
    h, w = shape.flow_size
    s = shape.image_size
    return {"image1": random_images(shape.pairs, h, w, ctx, 1),
            "image2": random_images(shape.pairs, h, w, ctx, 2),
            "view1": random_images(shape.images, s, s, ctx, 3),
            "view2": random_images(shape.images, s, s, ctx, 4)}


class OurStep:
    """One MC-JEPA pretraining step, as the trainer takes it (flow on, both branches)."""

    def __init__(self, recipe: Recipe, shape: StepShape, ctx: BenchContext) -> None:
        self.ctx = ctx
        self.recipe = recipe
        self.model = our_model(recipe, ctx, train=True)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, recipe),
                                           lr=recipe.optim.lr_encoder, betas=tuple(recipe.optim.betas))
        module: nn.Module = PretrainStep(self.model, recipe.loss)
        self.module = torch.compile(module) if ctx.compile else module
        self.batch = step_batch(shape, ctx)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.steps = 0

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with self.ctx.autocast_ctx():
            loss, _ = self.module(self.batch, self.steps, True)
        if not bool(torch.isfinite(loss).item()):  # the trainer's non-finite check
            raise RuntimeError(f"non-finite loss in the benchmark step: {loss.item()}")
        loss.backward()
        clip = self.recipe.optim.grad_clip
        if clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.params
                                                         if p.grad is not None]))
        if not bool(torch.isfinite(norm).item()):
            raise RuntimeError("non-finite gradient in the benchmark step")
        self.optimizer.step()
        self.steps += 1


class BareStep:
    """The encoder's floor: timm ConvNeXt forward+backward on the same images, the same
    expander on the pooled views, gradient clipping and AdamW (DESIGN.md section 6)."""

    def __init__(self, recipe: Recipe, shape: StepShape, ctx: BenchContext) -> None:
        self.ctx = ctx
        self.recipe = recipe
        torch.manual_seed(0)
        enc = recipe.model.encoder
        self.net = timm.create_model(enc.arch, pretrained=False, num_classes=0,
                                     drop_path_rate=enc.drop_path_rate)
        self.expander = build_expander(self.net.num_features, list(recipe.model.expander.dims))
        self.net.to(ctx.device, memory_format=ctx.memory_format()).train()
        self.expander.to(ctx.device).train()
        o = recipe.optim
        params = [{"params": list(self.net.parameters()), "lr": o.lr_encoder},
                  {"params": list(self.expander.parameters()), "lr": o.lr_expander}]
        self.optimizer = torch.optim.AdamW(params, lr=o.lr_encoder, betas=tuple(o.betas),
                                           weight_decay=o.weight_decay)
        self.params = [p for g in params for p in g["params"]]
        self.forward = torch.compile(self._forward) if ctx.compile else self._forward
        batch = step_batch(shape, ctx)
        self.frames = torch.cat((batch["image1"], batch["image2"]), 0)  # what our flow branch encodes
        self.views = (batch["view1"], batch["view2"])

    def _forward(self) -> torch.Tensor:
        fmap = self.net.forward_features(self.frames)  # (2P, C, H/32, W/32)
        b = self.views[0].shape[0]
        pooled = self.net.forward_features(torch.cat(self.views, 0)).mean(dim=(2, 3))  # (2B, C)
        z1 = self.expander(pooled[:b])  # one expander call per view, as ours
        z2 = self.expander(pooled[b:])
        return fmap.float().square().mean() + (z1.float() - z2.float()).square().mean()

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with self.ctx.autocast_ctx():
            loss = self.forward()
        loss.backward()
        if self.recipe.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.recipe.optim.grad_clip)
        self.optimizer.step()


def build_step(side: str, recipe: Recipe, shape: StepShape, ctx: BenchContext) -> Any:
    if side == "ours":
        return OurStep(recipe, shape, ctx)
    if side == "bare":
        return BareStep(recipe, shape, ctx)
    raise ValueError(f"side must be 'ours' or 'bare', got {side!r}")


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
