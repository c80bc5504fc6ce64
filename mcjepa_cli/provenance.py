"""Where every recipe default comes from: the MC-JEPA paper (Bardes, Ponce & LeCun 2023), or a
choice, with its source.

``PROVENANCE`` maps each recipe field, keyed exactly as docs/recipes.md writes it
(``model.flow_head.radius``, ``data.flow[].repeat``, ``train.eval_sets[].root``), to
``(kind, source)`` for its typed default. ``RECIPE_PROVENANCE`` does the same for the values of a
packaged recipe that differ from the defaults (the paper recipe, ``mcjepa_convnext_tiny``); a
value that is a list of sources (``data.flow``) is described field by field
(``data.flow[].name``, ``data.flow[].repeat``).

kind ``"paper"``: the paper publishes the value; the source says where. The paper publishes the
architecture (ConvNeXt-T pyramid, PWC-style head with LayerNorm, radius 4, +-128 px clip), VICReg's
25/25/1 and 8192-8192-8192 expander with VICReg's augmentations, AdamW with lr 3e-4 (encoder) and
1e-4 (flow head), 384 images + 8 frame pairs per step, 100 epochs with 10 warm-up epochs and
flow from epoch 10, the dataset list, and the variance-covariance ablation.

kind ``"choice"``: the paper does not publish it (flow-loss weights, SSIM share, smoothness
constants, occlusion schedule, dataset sampling ratios, flow crop size, decoder widths, ...) or it
is purely operational; the source names where the value comes from: a method it follows (ARFlow,
UFlow, PWC-Net, VICReg, ConvNeXt/timm, PyTorch), a measurement of this toolkit (with the doc that
holds it), or ``toolkit`` for how a run is executed, logged and stored.

scripts/gen_recipe_docs.py renders both tables into docs/recipes.md; tests/test_provenance.py
checks that every field has exactly one entry.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["KINDS", "PROVENANCE", "RECIPE_PROVENANCE", "Kind"]

Kind = Literal["paper", "choice"]
KINDS: tuple[str, ...] = ("paper", "choice")

# Where in the paper (section topics: the method, its training setup and ablations).
_ENCODER = "method, encoder (modified ConvNeXt-T, 6-level pyramid)"
_FLOW_HEAD = "method, flow estimator (PWC-Net style)"
_LOSSES = "method, flow losses"
_CONTENT = "method, content branch (VICReg)"
_TRAINING = "training setup"
_AUGMENT = "training setup: VICReg's two-view augmentations"
_VC = "VC ablation (Table 4): variance-covariance on every level"

_NOT_PUBLISHED = "not published"
_SYNTHETIC = "toolkit: the built-in synthetic world (docs/synthetic-world.md)"
_NO_DATASET = (
    "toolkit: the built-in synthetic world, so that the defaults run without a dataset; "
    "the paper's datasets are set by the mcjepa_convnext_tiny recipe"
)


def _paper(where: str) -> tuple[str, str]:
    return ("paper", where)


def _choice(source: str) -> tuple[str, str]:
    return ("choice", source)


PROVENANCE: dict[str, tuple[str, str]] = {
    "name": _choice("toolkit: a label for the run"),
    # model
    "model.content": _paper(
        "method: motion and content learnt jointly (false = the M-JEPA ablation)"
    ),
    "model.init": _choice("toolkit: random initialisation unless a checkpoint is given"),
    "model.encoder.arch": _choice(
        "toolkit: timm's convnext_atto, small enough for a CPU; the paper's ConvNeXt-T is set by "
        "the mcjepa_convnext_tiny recipe"
    ),
    "model.encoder.stem_channels": _choice(
        f"{_NOT_PUBLISHED}; half the first stage's width (at least 12, so that timm's stem "
        "factorises exactly)"
    ),
    "model.encoder.extra_channels": _choice(f"{_NOT_PUBLISHED}; the last stage's width"),
    "model.encoder.drop_path_rate": _choice(
        f"timm's default (no stochastic depth); {_NOT_PUBLISHED}"
    ),
    "model.encoder.init": _choice("toolkit: random initialisation unless a state dict is given"),
    "model.flow_head.strides": _choice(
        "PWC-Net, ARFlow: flow from the coarsest level down to stride 4, then upsampled; "
        f"which levels is {_NOT_PUBLISHED}"
    ),
    "model.flow_head.proj_channels": _choice(
        f"ARFlow (PWC-Lite projects each level to 32 channels); {_NOT_PUBLISHED}; measured here: "
        "64 was worse on CPU (docs/pretrain.md)"
    ),
    "model.flow_head.radius": _paper(f"{_FLOW_HEAD}: search radius 4"),
    "model.flow_head.normalize_features": _choice(
        "measured here: without it the cost volume is ~100x smaller than the decoder's other "
        "inputs and flow barely starts (see meaning; CHANGELOG)"
    ),
    "model.flow_head.decoder_channels": _choice(
        f"PWC-Net-like decoder widths, narrowed (PWC-Net: 128, 128, 96, 64, 32); {_NOT_PUBLISHED}"
    ),
    "model.flow_head.decoder_norm": _paper(
        f"{_FLOW_HEAD}: LayerNorm after every decoder conv but the last (training collapses "
        "without it)"
    ),
    "model.flow_head.share_decoder": _choice(
        f"ARFlow (PWC-Lite shares one decoder across levels); {_NOT_PUBLISHED}"
    ),
    "model.flow_head.flow_unit": _choice(
        "measured here: level-pixel outputs moved the coarse levels' flow 8x further per step "
        "than the fine ones' (see meaning; CHANGELOG)"
    ),
    "model.flow_head.max_flow": _paper(f"{_FLOW_HEAD}: output clipped to +-128 px"),
    "model.flow_head.align_corners": _choice("PyTorch's default, passed explicitly"),
    "model.expander.dims": _paper(f"{_CONTENT}: 8192-8192-8192 expander"),
    # data
    "data.flow": _choice(_NO_DATASET),
    "data.images": _choice(_NO_DATASET),
    "data.flow_batch_size": _paper(f"{_TRAINING}: 8 frame pairs per step"),
    "data.image_batch_size": _paper(f"{_TRAINING}: 384 images per step"),
    "data.flow_size": _choice(f"ARFlow's Sintel training crop (384 x 832); {_NOT_PUBLISHED}"),
    "data.image_size": _paper(f"{_AUGMENT} (224-px RandomResizedCrop)"),
    "data.num_workers": _choice("toolkit"),
    "data.on_error": _choice("toolkit"),
    "data.video_cache_mb": _choice("toolkit"),
    "data.flow[].name": _choice(_NO_DATASET),
    "data.flow[].root": _choice("toolkit: $MCJEPA_DATA/<Name> (docs/datasets.md)"),
    "data.flow[].repeat": _choice(f"{_NOT_PUBLISHED} (dataset sampling ratios)"),
    "data.flow[].split": _choice(f"{_NOT_PUBLISHED}; the benchmarks' training frames"),
    "data.flow[].passes": _choice(f"{_NOT_PUBLISHED}; both rendering passes"),
    "data.flow[].length": _choice(_SYNTHETIC),
    "data.flow[].multiview": _choice(
        f"{_NOT_PUBLISHED}; the benchmark's pairs only (unsupervised-flow methods such as UFlow "
        "also train on KITTI's multi-view extension)"
    ),
    "data.images[].name": _choice(_NO_DATASET),
    "data.images[].root": _choice("toolkit: $MCJEPA_DATA/ImageNet (docs/datasets.md)"),
    "data.images[].repeat": _choice("toolkit: the paper reads one image dataset, nothing to mix"),
    "data.images[].split": _choice("VICReg: ImageNet-1k's train split"),
    "data.images[].length": _choice(_SYNTHETIC),
    "data.images[].source_size": _choice(_SYNTHETIC),
    "data.synthetic.min_layers": _choice(_SYNTHETIC),
    "data.synthetic.max_layers": _choice(_SYNTHETIC),
    "data.synthetic.min_object_size": _choice(_SYNTHETIC),
    "data.synthetic.max_object_size": _choice(_SYNTHETIC),
    "data.synthetic.max_translation": _choice(_SYNTHETIC),
    "data.synthetic.subpixel_fraction": _choice(_SYNTHETIC),
    "data.synthetic.max_rotation_deg": _choice(_SYNTHETIC),
    "data.synthetic.max_scale_change": _choice(_SYNTHETIC),
    "data.synthetic.camera_motion": _choice(_SYNTHETIC),
    "data.synthetic.camera_max_translation": _choice(_SYNTHETIC),
    "data.synthetic.camera_max_rotation_deg": _choice(_SYNTHETIC),
    "data.synthetic.camera_max_zoom": _choice(_SYNTHETIC),
    "data.synthetic.lighting_change": _choice(_SYNTHETIC),
    "data.synthetic.noise_std": _choice(_SYNTHETIC),
    "data.synthetic.blur_prob": _choice(_SYNTHETIC),
    "data.synthetic.max_blur_sigma": _choice(_SYNTHETIC),
    "data.synthetic.class_hue_spread": _choice(
        "toolkit: the synthetic world; measured here (docs/ablations.md)"
    ),
    "data.synthetic.class_shape_prob": _choice(
        "toolkit: the synthetic world; measured here (docs/ablations.md)"
    ),
    "data.augment.crop_scale": _paper(_AUGMENT),
    "data.augment.flip": _paper(_AUGMENT),
    "data.augment.jitter": _paper(_AUGMENT),
    "data.augment.jitter_prob": _paper(_AUGMENT),
    "data.augment.grayscale_prob": _paper(_AUGMENT),
    "data.augment.blur_prob": _paper(_AUGMENT),
    "data.augment.solarize_prob": _paper(_AUGMENT),
    "data.flow_augment.scale": _choice(f"{_NOT_PUBLISHED}; no rescaling"),
    "data.flow_augment.hflip": _choice(f"ARFlow (horizontal flip); {_NOT_PUBLISHED}"),
    "data.flow_augment.vflip": _choice(f"{_NOT_PUBLISHED}; off"),
    "data.flow_augment.swap": _choice(f"{_NOT_PUBLISHED}; off (ARFlow swaps the frames)"),
    # loss
    "loss.flow_weight": _choice(f"{_NOT_PUBLISHED} (flow-loss weight)"),
    "loss.content_weight": _choice(f"{_NOT_PUBLISHED}; L = L_flow + L_ssl unweighted"),
    "loss.photometric": _choice(f"{_NOT_PUBLISHED} (flow-loss weight)"),
    "loss.photo_l1": _choice(
        f"ARFlow (KITTI: 0.15 L1 + 0.85 SSIM); the SSIM share is {_NOT_PUBLISHED}"
    ),
    "loss.photo_l2": _choice("ARFlow (no L2 term)"),
    "loss.photo_ssim": _choice(
        f"ARFlow (KITTI: 0.15 L1 + 0.85 SSIM); the SSIM share is {_NOT_PUBLISHED}"
    ),
    "loss.photo_census": _choice(
        "off by default (UFlow/SMURF use census); measured here: slower on CPU, helps the "
        "quickstart (docs/pretrain.md)"
    ),
    "loss.level_decay": _choice(
        f"{_NOT_PUBLISHED}; measured here: equal level weights were no better (docs/pretrain.md)"
    ),
    "loss.smoothness": _choice(
        f"UFlow (second-order smoothness weight 2, its KITTI setting); {_NOT_PUBLISHED}"
    ),
    "loss.smoothness_order": _choice("ARFlow, UFlow (second order on KITTI)"),
    "loss.smoothness_edge": _choice(f"ARFlow (edge constant alpha = 10); {_NOT_PUBLISHED}"),
    "loss.feature_regression": _choice(f"{_NOT_PUBLISHED} (flow-loss weight)"),
    "loss.cycle": _choice(f"{_NOT_PUBLISHED} (flow-loss weight)"),
    "loss.vc": _paper(f"{_VC}; its weight is {_NOT_PUBLISHED}"),
    "loss.vc_variance": _choice(f"VICReg's variance hinge at weight 1; {_NOT_PUBLISHED}"),
    "loss.vc_covariance": _choice(f"VICReg's 25:1 variance-to-covariance ratio; {_NOT_PUBLISHED}"),
    "loss.vc_level_weights": _choice(f"{_NOT_PUBLISHED}; less weight on the coarse levels"),
    "loss.vc_samples": _choice(f"{_NOT_PUBLISHED}"),
    "loss.occlusion": _paper(f"{_LOSSES}: forward-backward occlusion check (UnFlow's test)"),
    "loss.max_occluded_fraction": _choice(
        "toolkit guard: masks from a still-poor flow stall training (measured here, "
        "docs/pretrain.md); the 0.5 threshold is not tuned"
    ),
    "loss.vicreg_inv": _paper(f"{_CONTENT}: 25 / 25 / 1"),
    "loss.vicreg_var": _paper(f"{_CONTENT}: 25 / 25 / 1"),
    "loss.vicreg_cov": _paper(f"{_CONTENT}: 25 / 25 / 1"),
    "loss.flow_encoder_grad": _paper(
        "method: plain joint backpropagation (the scaling is a toolkit option, docs/ablations.md)"
    ),
    # optim
    "optim.lr_encoder": _paper(f"{_TRAINING}: AdamW, lr 3e-4 for the encoder"),
    "optim.lr_flow_head": _paper(f"{_TRAINING}: AdamW, lr 1e-4 for the flow head"),
    "optim.lr_expander": _choice(f"{_NOT_PUBLISHED}; the encoder's rate"),
    "optim.weight_decay": _choice(f"ConvNeXt's AdamW weight decay (timm); {_NOT_PUBLISHED}"),
    "optim.betas": _choice(f"PyTorch's AdamW default; {_NOT_PUBLISHED}"),
    "optim.grad_clip": _choice(
        "measured here: per-part clipping at 1.0 beat no clipping and 10 (docs/pretrain.md)"
    ),
    "optim.final_lr_ratio": _choice(f"{_NOT_PUBLISHED}; the cosine schedule ends at zero"),
    # schedule
    "schedule.unit": _paper(f"{_TRAINING}: lengths in epochs"),
    "schedule.total": _paper(f"{_TRAINING}: 100 epochs"),
    "schedule.warmup": _paper(f"{_TRAINING}: 10 warm-up epochs, cosine schedule"),
    "schedule.flow_start": _paper(f"{_TRAINING}: flow from epoch 10"),
    "schedule.ssim_start": _choice(
        f"{_NOT_PUBLISHED}; 0 = no staging (ARFlow starts with census only, then L1 + SSIM)"
    ),
    "schedule.occlusion_start": _choice(
        f"{_NOT_PUBLISHED} (occlusion schedule); 0 = masks from the flow start"
    ),
    "schedule.steps_per_epoch": _choice("toolkit: derived from the content data"),
    # train
    "train.seed": _choice("toolkit"),
    "train.device": _choice("toolkit"),
    "train.precision": _choice("toolkit"),
    "train.log_every": _choice("toolkit"),
    "train.checkpoint_every": _choice("toolkit"),
    "train.keep_checkpoints": _choice("toolkit"),
    "train.max_nonfinite_steps": _choice("toolkit"),
    "train.sync_bn": _choice(
        "VICReg (SyncBatchNorm in the expander under DDP); off where it cannot run"
    ),
    "train.eval_pairs": _choice("toolkit"),
    "train.eval_every": _choice("toolkit"),
    "train.eval_size": _choice("toolkit"),
    "train.eval_sets": _choice("toolkit"),
    "train.grad_norms_every": _choice("toolkit"),
    "train.report_plots": _choice("toolkit"),
    "train.channels_last": _choice("toolkit"),
    "train.compile": _choice("toolkit"),
    "train.inject_nan_at": _choice("toolkit"),
    "train.eval_sets[].name": _choice("toolkit"),
    "train.eval_sets[].root": _choice("toolkit"),
    "train.eval_sets[].pass_name": _choice("toolkit"),
    "train.eval_sets[].split": _choice("toolkit"),
}

# Values of a packaged recipe that differ from the defaults (keys as its table in
# docs/recipes.md writes them; a list of sources field by field).
RECIPE_PROVENANCE: dict[str, dict[str, tuple[str, str]]] = {
    "mcjepa_convnext_tiny": {
        "model.encoder.arch": _paper(_ENCODER),
        "model.encoder.drop_path_rate": _choice(
            f"ConvNeXt-T's ImageNet-1k setting (ConvNeXt paper, timm); {_NOT_PUBLISHED}"
        ),
        "model.flow_head.proj_channels": _choice(
            f"{_NOT_PUBLISHED}; wider than the CPU default for ConvNeXt-T's wider features "
            "(not measured at this scale)"
        ),
        "model.flow_head.decoder_channels": _choice(f"PWC-Net's decoder widths; {_NOT_PUBLISHED}"),
        "data.flow[].name": _paper(
            "training data: FlyingChairs, FlyingThings3D, KITTI 2012/2015, MPI-Sintel, HD1K"
        ),
        "data.flow[].repeat": _choice(
            f"{_NOT_PUBLISHED} (dataset sampling ratios); the counts balance the datasets' "
            "sizes (recipe comment)"
        ),
        "data.images[].name": _paper("training data: ImageNet-1k"),
        "data.flow_size": _choice(f"UFlow's FlyingChairs resolution (384 x 512); {_NOT_PUBLISHED}"),
        "data.num_workers": _choice("toolkit"),
        "train.log_every": _choice("toolkit"),
        "train.checkpoint_every": _choice("toolkit"),
        "model.flow_head.decoder_norm": _choice(
            "measured here at convnext_atto (docs/pretrain.md: per-position LayerNorm delays "
            "learning to read the cost volume); departs from the paper's LayerNorm; not yet "
            "shown at ConvNeXt-T scale (docs/reproducing.md, paper_proxy)"
        ),
        **{key: _choice(
            f"{_NOT_PUBLISHED}; the CPU quickstart's measured value (docs/pretrain.md), not yet "
            "shown at ConvNeXt-T scale (docs/reproducing.md, paper_proxy)")
           for key in ("loss.content_weight", "loss.photometric", "loss.photo_l1",
                       "loss.photo_census", "loss.smoothness")},
        **{key: _choice(
            f"{_NOT_PUBLISHED}; the staged objective of ARFlow / UFlow, switched in after 40 of "
            "the 90 flow epochs (not measured)")
           for key in ("schedule.ssim_start", "schedule.occlusion_start")},
    },
}
