"""The MC-JEPA objective: flow terms on a batch of frame pairs + VICReg on a batch of views.

``L = flow_weight * L_flow + L_ssl`` (DESIGN.md 1.3). Every term is returned by name, unweighted,
next to the weighted ``loss``, so the training log reports each one separately.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mcjepa_cli.losses.occlusion import occlusion_mask
from mcjepa_cli.losses.photometric import masked_mean, photometric_distance
from mcjepa_cli.losses.regression import cycle_loss, feature_regression_loss
from mcjepa_cli.losses.smoothness import smoothness_loss
from mcjepa_cli.losses.vc import feature_vc_loss
from mcjepa_cli.losses.vicreg import vicreg_loss
from mcjepa_cli.models.layers import resize_flow, warp


@dataclass
class LossConfig:
    """Weights and options of every loss term (all are recipe fields ``loss.*``)."""

    flow_weight: float = 1.0  # weight of the whole flow objective L_flow
    content_weight: float = 1.0  # weight of the VICReg objective L_ssl
    # photometric reconstruction, multi-scale: each level scored at its own resolution,
    # the finest at full resolution; level weights multiply by level_decay per coarser level
    photometric: float = 1.0
    photo_l1: float = 0.15  # robust (Charbonnier) L1 share of the per-pixel distance
    photo_l2: float = 0.0
    photo_ssim: float = 0.85  # from schedule.ssim_start on (counted from the flow start)
    photo_census: float = 0.0  # 7x7 soft census; slower (~20% on CPU), optional
    level_decay: float = 0.5
    smoothness: float = 2.0  # edge-aware smoothness of the finest level's flow
    smoothness_order: int = 2  # 1 or 2 (second order is the usual unsupervised-flow default)
    smoothness_edge: float = 10.0  # lambda in exp(-lambda * |grad I|), images in [0, 1]
    feature_regression: float = 0.1  # || X_t - W(X_{t+1}, f) ||^2 at every pyramid level
    cycle: float = 0.1  # || X_t - W(W(X_t, f_bw), f_fw) ||^2 at every pyramid level
    # variance-covariance regularisation of the encoder features at every level (finest first);
    # without it feature regression collapses the features (paper, Table 4)
    vc: float = 1.0
    vc_variance: float = 1.0
    vc_covariance: float = 0.04
    vc_level_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 0.5, 0.5, 0.25])
    vc_samples: int = 1024  # feature vectors sampled per level for the VC terms
    # forward-backward occlusion masking of the reconstruction / regression terms
    occlusion: bool = True  # from schedule.occlusion_start on (counted from the flow start)
    # a sample whose occluded fraction exceeds this is left unmasked (flow still poor)
    max_occluded_fraction: float = 0.5
    # VICReg on the content branch
    vicreg_inv: float = 25.0
    vicreg_var: float = 25.0
    vicreg_cov: float = 1.0
    # scale of the gradient that reaches each encoder level (finest first, strides 2..64; a
    # shorter list repeats its last value) through the flow head: all of the reconstruction and
    # smoothness gradient, and the part of feature regression and cycle that flows through the
    # flow they warp with. 1.0 = plain backpropagation (the paper). The flow head itself learns
    # at full weight, and VC, VICReg and the direct feature terms reach the encoder unscaled.
    # Below 1 it keeps a heavily weighted reconstruction from setting the course of the levels
    # that content and label propagation read (docs/ablations.md has the gradient norms).
    flow_encoder_grad: list[float] = field(default_factory=lambda: [1.0])


@dataclass(frozen=True)
class FlowStage:
    """Which switchable parts of the flow objective are on at a step (``schedule.*_start``)."""

    ssim: bool = True  # the SSIM share of the reconstruction (loss.photo_ssim)
    occlusion: bool = True  # occlusion masking (when loss.occlusion is true)


FULL_STAGE = FlowStage()


def _per_level(values: list[float], level: int) -> float:
    """``values[level]``, or the last value for levels past the end of the list."""
    return values[level] if level < len(values) else values[-1]


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` in the forward pass; its gradient multiplied by ``scale`` in the backward pass."""
    if scale == 1.0:
        return x
    return x.detach() + scale * (x - x.detach())


def _flow_at(flows: dict[int, torch.Tensor], stride: int, size: tuple[int, int],
             align_corners: bool) -> torch.Tensor:
    """Flow for an encoder level: the estimate at that stride, else the nearest one resized."""
    if stride in flows and tuple(flows[stride].shape[-2:]) == size:
        return flows[stride]
    nearest = min(flows, key=lambda s: abs(s - stride))
    return resize_flow(flows[nearest], size, align_corners=align_corners)


def _guarded_occlusion(fw: torch.Tensor, bw: torch.Tensor, max_fraction: float,
                       align_corners: bool) -> torch.Tensor:
    """Visibility mask (1 = visible) from the forward-backward check, per-sample guarded."""
    occ = occlusion_mask(fw, bw, align_corners=align_corners)  # (N, 1, h, w)
    frac = occ.flatten(1).mean(1)  # (N,)
    keep = (frac <= max_fraction).to(occ.dtype).view(-1, 1, 1, 1)
    return 1.0 - occ * keep


def flow_objective(model, img1: torch.Tensor, img2: torch.Tensor, cfg: LossConfig,
                   stage: FlowStage = FULL_STAGE) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Flow losses on frame pairs, both directions estimated.

    Args:
        model: an (unwrapped) MCJEPA.
        img1, img2: (B, 3, H, W) frames in [0, 1]; H and W multiples of the coarsest flow stride.
        cfg: loss weights.
        stage: which staged parts (SSIM share, occlusion masks) are on at this step.

    Returns:
        (weighted L_flow, dict of unweighted terms).
    """
    b = img1.shape[0]
    ac = model.cfg.flow_head.align_corners
    pyr = model.features(torch.cat((img1, img2), 0))  # each (2B, C, h, w)
    src = pyr  # frames (1, 2)
    tgt = [torch.cat((f[b:], f[:b]), 0) for f in pyr]  # frames (2, 1)
    head_in = [scale_gradient(f, _per_level(cfg.flow_encoder_grad, i))
               for i, f in enumerate(pyr)]
    head_tgt = [torch.cat((f[b:], f[:b]), 0) for f in head_in]
    # coarsest first, each (2B, 2, h, w): forward then backward
    flows_list = model.flow_pyramid(head_in, head_tgt)
    strides = model.flow_head.strides
    flows = dict(zip(strides, flows_list))
    images_a = torch.cat((img1, img2), 0)
    images_b = torch.cat((img2, img1), 0)
    use_occ = cfg.occlusion and stage.occlusion
    ssim_share = cfg.photo_ssim if stage.ssim else 0.0

    def visibility(fw: torch.Tensor) -> torch.Tensor:
        bw = torch.cat((fw[b:], fw[:b]), 0)  # the opposite direction for each sample
        if not use_occ:
            return torch.ones_like(fw[:, :1])
        return _guarded_occlusion(fw.detach(), bw.detach(), cfg.max_occluded_fraction, ac)

    terms: dict[str, torch.Tensor] = {}
    # --- photometric, multi-scale ---
    photo = img1.new_zeros(())
    wsum = 0.0
    occ_fraction = img1.new_zeros(())
    n_levels = len(strides)
    for k, s in enumerate(strides):
        weight = cfg.level_decay ** (n_levels - 1 - k)
        f = flows[s]
        if k == n_levels - 1:  # finest: score at full resolution
            f = resize_flow(f, tuple(img1.shape[-2:]), align_corners=ac)
            ia, ib = images_a, images_b
        else:
            ia = F.interpolate(images_a, size=f.shape[-2:], mode="area")
            ib = F.interpolate(images_b, size=f.shape[-2:], mode="area")
        vis = visibility(f)
        warped, inside = warp(ib, f, align_corners=ac, return_mask=True)
        d = photometric_distance(ia, warped, l1=cfg.photo_l1, l2=cfg.photo_l2,
                                 ssim=ssim_share, census=cfg.photo_census)
        photo = photo + weight * masked_mean(d, vis * inside)
        wsum += weight
        if k == n_levels - 1:
            occ_fraction = 1.0 - vis.mean()
    terms["photometric"] = photo / wsum
    # --- smoothness on the finest level's flow at its own resolution ---
    f_fine = flows[strides[-1]]
    img_fine = F.interpolate(images_a, size=f_fine.shape[-2:], mode="area")
    terms["smoothness"] = smoothness_loss(
        f_fine, img_fine, order=cfg.smoothness_order, edge_weight=cfg.smoothness_edge
    )
    # --- feature regression, cycle consistency and VC at every pyramid level ---
    reg = img1.new_zeros(())
    cyc = img1.new_zeros(())
    vc_var = img1.new_zeros(())
    vc_cov = img1.new_zeros(())
    vc_total = img1.new_zeros(())
    for li, (xa, xb) in enumerate(zip(src, tgt)):
        size = tuple(xa.shape[-2:])
        f = _flow_at(flows, model.feature_strides[li], size, ac)
        f_bw = torch.cat((f[b:], f[:b]), 0)
        vis = visibility(f)
        _, inside = warp(xb[:, :1], f, align_corners=ac, return_mask=True)
        mask = vis * inside
        if cfg.feature_regression:
            reg = reg + feature_regression_loss(xa, xb, f, mask, align_corners=ac)
        if cfg.cycle:
            cyc = cyc + cycle_loss(xa, f, f_bw, mask, align_corners=ac)
        if cfg.vc:
            lw = _per_level(cfg.vc_level_weights, li)
            v, c = feature_vc_loss(xa, cfg.vc_samples)
            vc_var = vc_var + v
            vc_cov = vc_cov + c
            vc_total = vc_total + lw * (cfg.vc_variance * v + cfg.vc_covariance * c)
    n_enc = len(src)
    terms["feature_regression"] = reg / n_enc
    terms["cycle"] = cyc / n_enc
    terms["vc_variance"] = vc_var / n_enc
    terms["vc_covariance"] = vc_cov / n_enc
    terms["vc"] = vc_total / n_enc  # level-weighted variance + covariance, as in the loss
    loss = (
        cfg.photometric * terms["photometric"]
        + cfg.smoothness * terms["smoothness"]
        + cfg.feature_regression * terms["feature_regression"]
        + cfg.cycle * terms["cycle"]
        + cfg.vc * terms["vc"]
    )
    terms["occluded_fraction"] = occ_fraction.detach()
    terms["flow_loss"] = loss
    return loss, terms


def content_objective(model, view1: torch.Tensor, view2: torch.Tensor,
                      cfg: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg on the expander embeddings of two augmented views (B, 3, h, w) each."""
    b = view1.shape[0]
    lvl = model.content_level
    feats = model.encoder(torch.cat((view1, view2), 0), lvl + 1)[lvl]  # (2B, C, h, w), stride 32
    pooled = feats.mean(dim=(2, 3))  # (2B, C)
    # one expander call per view, as in VICReg: BatchNorm statistics stay per view
    z1 = model.expander(pooled[:b])
    z2 = model.expander(pooled[b:])
    out = vicreg_loss(z1, z2, cfg.vicreg_inv, cfg.vicreg_var, cfg.vicreg_cov, gather=True)
    with torch.no_grad():
        emb_std = z1.float().std(dim=0).mean()
    terms = {
        "vicreg": out["loss"],
        "invariance": out["invariance"],
        "variance": out["variance"],
        "covariance": out["covariance"],
        "embedding_std": emb_std,
    }
    return out["loss"], terms


def mcjepa_objective(model, batch: dict[str, torch.Tensor], cfg: LossConfig, flow_on: bool,
                     stage: FlowStage = FULL_STAGE) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss ``flow_weight * L_flow + content_weight * L_ssl`` and every named term.

    ``flow_on``: the flow objective has started (``schedule.flow_start``); ``stage``: which of
    its staged parts are on.
    """
    terms: dict[str, torch.Tensor] = {}
    total = None
    if flow_on and "image1" in batch:
        lf, tf = flow_objective(model, batch["image1"], batch["image2"], cfg, stage)
        terms.update(tf)
        total = cfg.flow_weight * lf
    if model.expander is not None and "view1" in batch:
        lc, tc = content_objective(model, batch["view1"], batch["view2"], cfg)
        terms.update(tc)
        total = cfg.content_weight * lc if total is None else total + cfg.content_weight * lc
    if total is None:
        raise RuntimeError("nothing to optimise: no flow batch (or flow not started) and no content branch")
    terms["loss"] = total
    return total, terms


# The objectives whose encoder-gradient norms ``objective_parts`` separates, with the weight
# of each inside the total loss (flow terms also carry ``flow_weight``).
FLOW_PARTS: dict[str, str] = {
    "reconstruction": "photometric",
    "smoothness": "smoothness",
    "feature_regression": "feature_regression",
    "cycle": "cycle",
    "vc": "vc",
}


def objective_parts(terms: dict[str, torch.Tensor], cfg: LossConfig) -> dict[str, torch.Tensor]:
    """The total loss split into its weighted objectives (they sum to ``terms["loss"]``).

    Keys: ``reconstruction``, ``smoothness``, ``feature_regression``, ``cycle``, ``vc`` (present
    when the flow objective ran) and ``vicreg`` (when the content objective ran). Each value
    keeps its autograd graph, so the gradient that one objective sends into a module can be
    taken on its own (``torch.autograd.grad``); objectives with a zero weight are left out.
    """
    parts: dict[str, torch.Tensor] = {}
    if "photometric" in terms:
        for name, key in FLOW_PARTS.items():
            weight = cfg.flow_weight * float(getattr(cfg, key))
            if weight:
                parts[name] = weight * terms[key]
    if "vicreg" in terms and cfg.content_weight:
        parts["vicreg"] = cfg.content_weight * terms["vicreg"]
    return parts
