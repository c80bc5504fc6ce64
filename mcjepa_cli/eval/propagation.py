"""Semi-supervised label propagation on frozen features (the DINO video-segmentation protocol).

Follows Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (2021),
``eval_video_segmentation.py`` (itself after Jabri et al. 2020 / UVC): for each target frame,
the context is the first frame with its ground-truth labels plus a queue of the last
``n_last`` frames with their *soft* predicted labels. For every target cell, affinities
``exp(cos / temperature)`` to the context cells inside a square neighbourhood of
``radius`` cells (per context frame) are computed, the ``topk`` largest over *all* context
frames are kept, normalised to sum 1, and used to average the context labels. Label maps are
upsampled bilinearly to the output size, each channel is min-max rescaled (DINO's
``norm_mask``) and the argmax gives the label.

A dense affinity between two 480p stride-8 feature maps (6k x 6k cells per context frame)
does not fit in memory, so affinities are computed tile by tile: a square tile of target cells
against the tile widened by ``radius`` in every context frame, masked to each cell's own window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

FeatureSource = Sequence[torch.Tensor] | Callable[[int], torch.Tensor]


def labels_to_onehot(labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """(H, W) integer label map -> (K, H, W) float one-hot, K = num_classes or max label + 1."""
    labels = labels.long()
    k = int(labels.max()) + 1 if num_classes is None else num_classes
    return F.one_hot(labels, k).permute(2, 0, 1).float()  # (K, H, W)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of an (H, W) label map, sampling pixel centres (PIL's NEAREST)."""
    x = labels.float()[None, None]
    out = F.interpolate(x, size=size, mode="nearest-exact")
    return out[0, 0].to(labels.dtype)


def _window_affinity_topk(
    target: torch.Tensor,
    context: torch.Tensor,
    labels: torch.Tensor,
    radius: int,
    topk: int,
    temperature: float,
    tile: int,
    max_elements: int = 1 << 24,
) -> torch.Tensor:
    """Propagate ``labels`` from ``context`` frames to ``target`` (all features L2-normalised).

    The target is cut into ``tile`` x ``tile`` cell tiles; each tile is compared with the same
    tile widened by ``radius`` cells in every context frame (one matrix product), entries
    outside each target cell's own square window are masked, and the top-k over all context
    frames is kept. Tiles are processed a band of tile rows at a time, with at most about
    ``max_elements`` similarities in memory.

    Args:
        target: (C, h, w) target features.
        context: (N, C, h, w) context features.
        labels: (N, K, h, w) context labels.

    Returns:
        (K, h, w) soft labels of the target.
    """
    n, c, h, w = context.shape
    kl = labels.shape[1]
    t, r = tile, radius
    big = t + 2 * r  # side of a widened tile (source region)
    q_cells, s_cells = t * t, big * big
    ph, pw = (-h) % t, (-w) % t
    nty, ntx = (h + ph) // t, (w + pw) // t
    pad = (r, r + pw, r, r + ph)  # (left, right, top, bottom)
    # Source regions as strided views: (N, C, nty, ntx, big, big); cells outside the image are
    # padding and are masked below.
    ctx_reg = F.pad(context, pad).unfold(2, big, t).unfold(3, big, t)
    lab_reg = F.pad(labels, pad).unfold(2, big, t).unfold(3, big, t)  # (N, K, nty, ntx, big, big)
    valid = F.pad(target.new_ones(1, 1, h, w), pad).unfold(2, big, t).unfold(3, big, t)
    valid = valid.reshape(nty, ntx, s_cells) > 0  # (nty, ntx, S)
    # Target tiles: (nty, ntx, Q, C).
    tgt = F.pad(target, (0, pw, 0, ph)).reshape(c, nty, t, ntx, t).permute(1, 3, 2, 4, 0)
    tgt = tgt.reshape(nty, ntx, q_cells, c)
    # The square window of target cell (a, b) of a tile, in its widened tile's coordinates:
    # rows a .. a + 2r, columns b .. b + 2r. Static for every tile.
    qa = torch.arange(t, device=target.device)
    sa = torch.arange(big, device=target.device)
    near = ((sa[None, :] - qa[:, None]) >= 0) & ((sa[None, :] - qa[:, None]) <= 2 * r)  # (t, big)
    window = (near[:, None, :, None] & near[None, :, None, :]).reshape(q_cells, s_cells)  # (Q, S)
    out = target.new_zeros(kl, nty * t, ntx * t)
    rows_per_band = max(1, max_elements // max(1, ntx * q_cells * n * s_cells))
    for y0 in range(0, nty, rows_per_band):
        y1 = min(nty, y0 + rows_per_band)
        b = (y1 - y0) * ntx  # tiles in this band
        src = ctx_reg[:, :, y0:y1].permute(2, 3, 0, 4, 5, 1)  # (rows, ntx, N, big, big, C)
        src = src.reshape(b, n * s_cells, c)  # (B, N*S, C)
        q = tgt[y0:y1].reshape(b, q_cells, c)  # (B, Q, C)
        sim = torch.bmm(q, src.transpose(1, 2)).view(b, q_cells, n, s_cells)  # (B, Q, N, S) cosines
        keep = window[None] & valid[y0:y1].reshape(b, 1, s_cells)  # (B, Q, S)
        sim = sim.masked_fill(~keep[:, :, None, :], float("-inf")).view(b, q_cells, n * s_cells)
        kk = min(topk, n * s_cells)
        top_sim, top_idx = sim.topk(kk, dim=2)  # (B, Q, kk): top-k over all context frames
        # exp(cos / T) normalised over the kept k; the softmax's max shift is exact and avoids
        # overflow at small temperatures; masked (-inf) entries weigh 0.
        weights = torch.softmax(top_sim / temperature, dim=2)  # (B, Q, kk)
        lab = lab_reg[:, :, y0:y1].permute(2, 3, 0, 4, 5, 1)  # (rows, ntx, N, big, big, K)
        lab = lab.reshape(b, n * s_cells, kl)  # (B, N*S, K)
        gathered = torch.gather(lab, 1, top_idx.reshape(b, -1, 1).expand(-1, -1, kl))
        gathered = gathered.view(b, q_cells, kk, kl)  # (B, Q, kk, K)
        soft = torch.einsum("bqk,bqkl->blq", weights, gathered)  # (B, K, Q)
        soft = soft.reshape(y1 - y0, ntx, kl, t, t).permute(2, 0, 3, 1, 4)  # (K, rows, t, ntx, t)
        out[:, y0 * t : y1 * t] = soft.reshape(kl, (y1 - y0) * t, ntx * t)
    return out[:, :h, :w]


def rescale_channels(prob: torch.Tensor) -> torch.Tensor:
    """Min-max rescale each channel of (K, H, W) to [0, 1] where its max is > 0.

    This is DINO's ``norm_mask``, applied after upsampling and before the argmax.
    """
    out = prob.clone()
    for i in range(prob.shape[0]):
        ch = prob[i]
        if ch.max() > 0:
            ch = ch - ch.min()
            out[i] = ch / ch.max() if ch.max() > 0 else ch
    return out


def soft_to_labels(
    soft: torch.Tensor, output_size: tuple[int, int] | None = None, rescale: bool = True
) -> torch.Tensor:
    """(K, h, w) soft labels -> (H, W) int64 label map: bilinear upsampling, rescale, argmax."""
    prob = soft
    if output_size is not None and tuple(output_size) != tuple(soft.shape[-2:]):
        prob = F.interpolate(soft[None], size=output_size, mode="bilinear", align_corners=False)[0]
    if rescale:
        prob = rescale_channels(prob)
    # argmax over the channel axis, first maximum wins (as torch.argmax); a running maximum is
    # much faster on CPU than a reduction over the outermost axis of a (K, H, W) tensor.
    best = prob[0].clone()
    labels = torch.zeros(prob.shape[1:], dtype=torch.long, device=prob.device)
    for k in range(1, prob.shape[0]):
        better = prob[k] > best
        best = torch.where(better, prob[k], best)
        labels[better] = k
    return labels


@torch.no_grad()
def propagate_sequence(
    features: FeatureSource,
    first_mask: torch.Tensor,
    num_frames: int | None = None,
    *,
    topk: int = 5,
    n_last: int = 7,
    radius: int = 12,
    temperature: float = 0.1,
    output_size: tuple[int, int] | None = None,
    rescale: bool = True,
    tile: int = 12,
    on_frame: Callable[[int, torch.Tensor], None] | None = None,
    return_maps: bool = True,
) -> list[torch.Tensor]:
    """Propagate the first frame's labels through a video (DINO protocol).

    Args:
        features: per-frame feature maps (C, h, w) (any scale; L2-normalised here), as a list
            or as a callable ``index -> (C, h, w)`` so that features are computed lazily.
        first_mask: (K, h, w) labels of frame 0 at feature resolution: one-hot (channel 0 =
            background, k = object k) or soft.
        num_frames: number of frames T; required when ``features`` is a callable.
        topk: affinities kept per target cell, over all context frames together.
        n_last: previous frames (with their soft predictions) in the context besides frame 0.
        radius: half-size of the square neighbourhood, in feature cells (0 = same cell only).
        temperature: affinity temperature, weights ``exp(cos / temperature)``.
        output_size: (H, W) of the returned label maps (bilinear upsampling of the soft labels);
            None = feature resolution.
        rescale: min-max rescale each upsampled channel before the argmax (DINO's norm_mask).
        tile: target tile side (cells) of the windowed affinity computation; changes memory and
            speed only, not the result.
        on_frame: called as ``on_frame(t, label_map)`` as soon as frame t is done (e.g. to
            write it), frame 0 included.
        return_maps: keep and return the label maps (False: return an empty list, for long
            videos whose maps are consumed by ``on_frame``).

    Returns:
        T label maps (H, W) int64; entry 0 is ``first_mask`` itself upsampled and argmaxed.

    Raises:
        ValueError: inconsistent shapes or invalid option values.
    """
    if callable(features) and not isinstance(features, Sequence):
        if num_frames is None:
            raise ValueError("num_frames is required when features is a callable")
        get = features
    else:
        seq = list(features)  # type: ignore[arg-type]
        num_frames = len(seq) if num_frames is None else num_frames
        if num_frames > len(seq):
            raise ValueError(f"num_frames={num_frames} but only {len(seq)} feature maps given")

        def get(i: int) -> torch.Tensor:
            return seq[i]

    if topk < 1 or n_last < 0 or radius < 0 or temperature <= 0 or tile < 1:
        raise ValueError(
            "need topk >= 1, n_last >= 0, radius >= 0, temperature > 0, tile >= 1; got "
            f"topk={topk}, n_last={n_last}, radius={radius}, temperature={temperature}, tile={tile}"
        )
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    if first_mask.ndim != 3:
        raise ValueError(f"first_mask must be (K, h, w), got shape {tuple(first_mask.shape)}")

    def normed(i: int) -> torch.Tensor:
        f = get(i)
        if f.ndim == 4 and f.shape[0] == 1:
            f = f[0]
        if f.ndim != 3 or tuple(f.shape[-2:]) != tuple(first_mask.shape[-2:]):
            raise ValueError(
                f"frame {i}: features must be (C, h, w) with (h, w) = "
                f"{tuple(first_mask.shape[-2:])}, got {tuple(f.shape)}"
            )
        return F.normalize(f.float(), dim=0)  # unit vector per cell

    first_feat = normed(0)
    first_soft = first_mask.to(device=first_feat.device, dtype=torch.float32)
    first_labels = soft_to_labels(first_soft, output_size, rescale)
    outputs = [first_labels] if return_maps else []
    if on_frame is not None:
        on_frame(0, first_labels)
    queue: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=n_last)
    for t in range(1, num_frames):
        feat = normed(t)
        ctx_feats = torch.stack([first_feat] + [f for f, _ in queue])  # (N, C, h, w)
        ctx_labels = torch.stack([first_soft] + [s for _, s in queue])  # (N, K, h, w)
        soft = _window_affinity_topk(feat, ctx_feats, ctx_labels, radius, topk, temperature, tile)
        if n_last:
            queue.append((feat, soft))  # the soft (not rescaled) prediction joins the context
        labels = soft_to_labels(soft, output_size, rescale)
        if return_maps:
            outputs.append(labels)
        if on_frame is not None:
            on_frame(t, labels)
    return outputs
