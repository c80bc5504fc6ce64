"""Label propagation against a dense, loop-written copy of the DINO protocol and known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mcjepa_cli.eval.propagation import (
    _window_affinity_topk,
    labels_to_onehot,
    propagate_sequence,
    rescale_channels,
    resize_labels,
)


def dense_reference(
    feats: list[np.ndarray], first: np.ndarray, topk: int, n_last: int, radius: int, temp: float
) -> list[np.ndarray]:
    """DINO's algorithm written densely in float64: full (target x source) affinity per context
    frame, multiplied by a neighbourhood mask built with loops, top-k over every context frame
    by thresholding at the k-th value, column normalisation. Returns soft labels (K, h, w)."""
    c, h, w = feats[0].shape
    k_cls = first.shape[0]

    def unit(f: np.ndarray) -> np.ndarray:
        f = f.reshape(c, -1).astype(np.float64)
        return f / np.linalg.norm(f, axis=0, keepdims=True)

    mask = np.zeros((h * w, h * w))
    for i in range(h):
        for j in range(w):
            for p in range(h):
                for q in range(w):
                    if abs(p - i) <= radius and abs(q - j) <= radius:
                        mask[i * w + j, p * w + q] = 1.0
    f0 = unit(feats[0])
    l0 = first.reshape(k_cls, -1).astype(np.float64)
    queue: list[tuple[np.ndarray, np.ndarray]] = []
    outs = []
    for t in range(1, len(feats)):
        ft = unit(feats[t])
        ctx_f = [f0] + [f for f, _ in queue]
        ctx_l = [l0] + [s for _, s in queue]
        aff = np.stack([np.exp(ft.T @ cf / temp) * mask for cf in ctx_f])  # (N, tgt, src)
        aff = aff.transpose(0, 2, 1).reshape(-1, h * w)  # (N * src, tgt)
        kth = -np.sort(-aff, axis=0)[topk - 1]  # k-th largest per target cell
        aff = np.where(aff >= kth[None], aff, 0.0)
        aff = aff / aff.sum(axis=0, keepdims=True)
        soft = np.concatenate(ctx_l, axis=1) @ aff  # (K, tgt)
        queue.append((ft, soft))
        queue = queue[-n_last:] if n_last else []
        outs.append(soft.reshape(k_cls, h, w))
    return outs


def random_first_mask(h: int, w: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, size=(h, w))
    return np.eye(k)[labels].transpose(2, 0, 1)  # (K, h, w) one-hot


@pytest.mark.parametrize(
    ("h", "w", "radius", "topk", "n_last", "tile"),
    [(7, 9, 2, 5, 2, 3), (6, 11, 1, 3, 3, 4), (5, 5, 4, 5, 1, 16), (8, 6, 0, 2, 2, 5)],
)
def test_soft_labels_match_dense_reference(h, w, radius, topk, n_last, tile) -> None:
    g = torch.Generator().manual_seed(h * 100 + w)
    feats = [torch.randn(16, h, w, generator=g) for _ in range(5)]
    first = random_first_mask(h, w, 3, seed=h + w)
    expected = dense_reference([f.numpy() for f in feats], first, topk, n_last, radius, 0.1)
    # Re-run our tiled kernel step by step with the same context queue as the reference.
    first_t = torch.from_numpy(first).float()
    unit = [torch.nn.functional.normalize(f, dim=0) for f in feats]
    queue: list[tuple[torch.Tensor, torch.Tensor]] = []
    for t in range(1, 5):
        ctx_f = torch.stack([unit[0]] + [f for f, _ in queue])
        ctx_l = torch.stack([first_t] + [s for _, s in queue])
        soft = _window_affinity_topk(unit[t], ctx_f, ctx_l, radius, topk, 0.1, tile)
        np.testing.assert_allclose(soft.numpy(), expected[t - 1], rtol=1e-4, atol=1e-5)
        queue = (queue + [(unit[t], soft)])[-n_last:] if n_last else []


def test_label_maps_match_dense_reference_and_tile_does_not_matter() -> None:
    h, w = 9, 10
    g = torch.Generator().manual_seed(3)
    feats = [torch.randn(8, h, w, generator=g) for _ in range(6)]
    first = random_first_mask(h, w, 4, seed=5)
    ref = dense_reference([f.numpy() for f in feats], first, 5, 3, 3, 0.1)
    outs = {
        tile: propagate_sequence(feats, torch.from_numpy(first).float(), topk=5, n_last=3,
                                 radius=3, rescale=False, tile=tile)
        for tile in (2, 4, 32)
    }
    for t in range(1, 6):
        expected = ref[t - 1].argmax(0)
        for tile, maps in outs.items():
            np.testing.assert_array_equal(maps[t].numpy(), expected, err_msg=f"tile {tile}, t {t}")
    np.testing.assert_array_equal(outs[2][0].numpy(), first.argmax(0))


def test_shifted_features_shift_labels() -> None:
    """Frame t sees a larger random feature field through a window moved by (t, 2t) cells:
    every cell already visible in frame 0 must receive its own (shifted) label."""
    big_h, big_w, h, w, c, frames = 30, 40, 14, 18, 64, 5
    g = torch.Generator().manual_seed(0)
    field = torch.randn(c, big_h, big_w, generator=g)
    yy, xx = torch.meshgrid(torch.arange(big_h), torch.arange(big_w), indexing="ij")
    big_labels = torch.zeros(big_h, big_w, dtype=torch.long)
    big_labels[(yy - 5) ** 2 + (xx - 4) ** 2 <= 9] = 1  # a disc that leaves the view
    big_labels[5:9, 9:13] = 2  # boxes that stay in view
    big_labels[10:13, 14:17] = 3
    offsets = [(t, 2 * t) for t in range(frames)]  # content moves up-left by (1, 2) per frame
    feats = [field[:, oy : oy + h, ox : ox + w] for oy, ox in offsets]
    truth = [big_labels[oy : oy + h, ox : ox + w] for oy, ox in offsets]
    # rescale=False: DINO's per-channel min-max rescaling would blow the tiny leftover
    # probability of the disc, gone from view by frame 4, back up to 1 somewhere.
    out = propagate_sequence(feats, labels_to_onehot(truth[0], 4), topk=5, n_last=3, radius=3,
                             temperature=0.1, rescale=False)
    for t, (oy, ox) in enumerate(offsets):
        seen = torch.zeros(h, w, dtype=torch.bool)  # cells of frame t that frame 0 also shows
        seen[: h - oy, : w - ox] = True
        assert torch.equal(out[t][seen], truth[t][seen]), f"frame {t}"
    assert {int(v) for v in out[0].unique()} == {0, 1, 2, 3}
    assert {int(v) for v in out[-1].unique()} == {0, 2, 3}


def test_upsampling_callable_features_and_on_frame() -> None:
    h, w = 6, 8
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(4, h, w, generator=g) for _ in range(3)]
    first = torch.zeros(h, w, dtype=torch.long)
    first[:, 4:] = 1
    seen: list[int] = []
    out = propagate_sequence(lambda i: feats[i], labels_to_onehot(first, 2), num_frames=3,
                             output_size=(24, 32), radius=8,
                             on_frame=lambda t, m: seen.append(t))
    assert seen == [0, 1, 2]
    assert [tuple(m.shape) for m in out] == [(24, 32)] * 3
    # frame 0: the given mask upsampled (bilinear, then argmax): left half 0, right half 1
    assert (out[0][:, :15] == 0).all() and (out[0][:, 17:] == 1).all()
    # identical features in every frame: labels are copied
    same = propagate_sequence([feats[0]] * 3, labels_to_onehot(first, 2), radius=2, rescale=False)
    assert all(torch.equal(m, first) for m in same)
    assert propagate_sequence(feats, labels_to_onehot(first, 2), return_maps=False) == []
    with pytest.raises(ValueError, match="num_frames"):
        propagate_sequence(lambda i: feats[i], labels_to_onehot(first, 2))
    with pytest.raises(ValueError, match="frame 1"):
        propagate_sequence([feats[0], torch.randn(4, h + 1, w)], labels_to_onehot(first, 2))


def test_helpers() -> None:
    lab = torch.tensor([[0, 2], [1, 1]])
    oh = labels_to_onehot(lab)
    assert oh.shape == (3, 2, 2) and torch.equal(oh.argmax(0), lab)
    up = lab.repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(resize_labels(lab, (4, 4)), up)
    p = torch.tensor([[[0.2, 0.4], [0.3, 0.2]], [[0.0, 0.0], [0.0, 0.0]]])
    r = rescale_channels(p)
    # (x - min) / (max - min)
    np.testing.assert_allclose(r[0].numpy(), [[0.0, 1.0], [0.5, 0.0]], atol=1e-6)
    assert torch.equal(r[1], p[1])  # an all-zero channel is left alone
