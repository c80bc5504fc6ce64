"""The linear probe, sliding-window inference, segment_eval outputs and the CLI's error paths."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from typer.testing import CliRunner

from mcjepa_cli.errors import UserError
from mcjepa_cli.eval.linear_probe import (
    AugmentedCrops,
    FeatureCache,
    LinearSegHead,
    ProbeConfig,
    backbone_levels,
    predict_image,
    select_levels,
    slide_logits,
    train_probe,
)
from mcjepa_cli.eval.seg_metrics import ConfusionMeter
from mcjepa_cli.eval.segment_eval import segment_eval
from mcjepa_cli.main import app


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP stalls on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


COLOURS = np.array([[20, 20, 20], [230, 40, 40], [40, 200, 60], [50, 70, 240]], dtype=np.uint8)


class FakeBackbone(nn.Module):
    """Stands in for MC-JEPA: six levels (strides 2..64), each a 1x1 conv of the pooled image
    (ceil pooling, so inputs need only be multiples of ``pad_multiple``)."""

    feature_strides = (2, 4, 8, 16, 32, 64)
    feature_channels = (3, 4, 5, 6, 7, 8)
    pad_multiple = 16

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.ModuleList(nn.Conv2d(3, c, 1) for c in self.feature_channels)

    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        assert img.shape[-1] % 16 == 0 and img.shape[-2] % 16 == 0, "input must be padded"
        return [p(F.avg_pool2d(img, s, ceil_mode=True))
                for p, s in zip(self.proj, self.feature_strides, strict=True)]


def colour_scene(seed: int, h: int = 48, w: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Rectangles of four flat colours; the class of a pixel is its colour."""
    rng = np.random.default_rng(seed)
    label = np.zeros((h, w), dtype=np.int64)
    for c in (1, 2, 3):
        y, x = rng.integers(0, h - 16), rng.integers(0, w - 16)
        label[y : y + rng.integers(12, 24), x : x + rng.integers(12, 28)] = c
    image = COLOURS[label].transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(label)


class ColourScenes(Dataset):
    def __init__(self, n: int, offset: int = 0) -> None:
        self.items = [colour_scene(offset + i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        image, label = self.items[i]
        return image, label, f"scene{i}"


def make_voc(root: Path, n_train: int = 3, n_val: int = 2, bad_value: int | None = None) -> Path:
    names = {"train": [f"t{i}" for i in range(n_train)], "val": [f"v{i}" for i in range(n_val)]}
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "SegmentationClass").mkdir()
    k = 0
    for split, ids in names.items():
        (sets / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for i in ids:
            image, label = colour_scene(100 + k)
            k += 1
            lab = label.numpy().astype(np.uint8)
            if bad_value is not None:
                lab[0, 0] = bad_value
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / "JPEGImages" / f"{i}.jpg",
                                                                 quality=95)
            Image.fromarray(lab, mode="L").save(root / "SegmentationClass" / f"{i}.png")
    return root


def small_cfg(model: nn.Module, **kw) -> ProbeConfig:
    base = {"levels": select_levels(model, (4, 8, 16, 32)), "crop": (32, 32),
            "slide_stride": (21, 21), "scale": None, "steps": 80, "batch_size": 8, "lr": 1e-2,
            "warmup_steps": 5, "cache_crops": 2, "eval_batch": 4}
    base.update(kw)
    return ProbeConfig(**base)


# ------------------------------------------------------------------------------ the head


def test_head_is_resize_concat_batchnorm_1x1conv():
    torch.manual_seed(0)
    feats = [torch.randn(2, 3, 8, 10), torch.randn(2, 5, 4, 5), torch.randn(2, 2, 2, 3)]
    head = LinearSegHead(in_channels=[3, 5, 2], num_classes=4)
    with torch.no_grad():
        head.bn.running_mean.uniform_(-1, 1)
        head.bn.running_var.uniform_(0.5, 2)
        head.bn.weight.uniform_(0.5, 1.5)
        head.bn.bias.uniform_(-1, 1)
        head.classifier.weight.normal_()
        head.classifier.bias.normal_()
    head.eval()
    # manual: every level upsampled to 8x10 with half-pixel bilinear, per-channel affine, matmul
    ups = [feats[0]] + [F.interpolate(f, size=(8, 10), mode="bilinear", align_corners=False)
                        for f in feats[1:]]
    x = torch.cat(ups, 1).double()
    bn = head.bn
    xn = (x - bn.running_mean.double()[:, None, None]) / torch.sqrt(
        bn.running_var.double()[:, None, None] + bn.eps)
    xn = xn * bn.weight.double()[:, None, None] + bn.bias.double()[:, None, None]
    w = head.classifier.weight.double()[:, :, 0, 0]
    expected = torch.einsum("kc,bchw->bkhw", w, xn) + head.classifier.bias.double()[:, None, None]
    out = head(feats)
    assert out.shape == (2, 4, 8, 10)
    assert torch.allclose(out.double(), expected, atol=1e-5)


def test_select_levels_rejects_unknown_strides():
    m = FakeBackbone()
    assert select_levels(m, (32, 4, 8)) == [1, 2, 4]
    assert select_levels(m, None) == list(range(6))
    with pytest.raises(UserError, match="stride 3 is not a pyramid level"):
        select_levels(m, (3,))


# ------------------------------------------------------------------------ sliding windows


def test_slide_logits_average_overlapping_windows():
    image = torch.rand(1, 3, 50, 70)
    weight = torch.randn(5, 3)

    def pointwise(x):  # a per-pixel predictor: every window agrees with the whole image
        return torch.einsum("kc,bchw->bkhw", weight, x)

    whole = pointwise(image)
    slid = slide_logits(pointwise, image, 5, crop=(32, 32), stride=(20, 20), batch=3)
    assert torch.allclose(slid, whole, atol=1e-6)

    calls = []

    def constant(x):  # window i predicts the value i + 1 everywhere
        out = torch.stack([torch.full((2, *x.shape[-2:]), float(len(calls) * 10 + j + 1))
                           for j in range(x.shape[0])])
        calls.append(x.shape[0])
        return out

    res = slide_logits(constant, torch.zeros(1, 3, 10, 16), 2, crop=(10, 10), stride=(6, 6),
                       batch=1)
    # windows x in [0, 10) and [6, 16): the overlap [6, 10) averages 1 and 11
    row = res[0, 0, 0]
    assert torch.allclose(row[:6], torch.tensor(1.0))
    assert torch.allclose(row[6:10], torch.tensor(6.0))
    assert torch.allclose(row[10:], torch.tensor(11.0))


# ------------------------------------------------------------------------------ training


@pytest.mark.parametrize("cache_crops", [0, 2])
def test_probe_learns_colour_classes_and_leaves_backbone_frozen(cache_crops):
    model = FakeBackbone()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = small_cfg(model, cache_crops=cache_crops)
    head = LinearSegHead(in_channels=[4, 5, 6, 7], num_classes=4)
    summary = train_probe(model, head, ColourScenes(6), cfg, torch.device("cpu"))
    assert summary.steps == 80 and summary.cache_crops == cache_crops
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"frozen backbone changed: {k}"
    assert all(p.grad is None for p in model.parameters())
    meter = ConfusionMeter(4)
    for image, label, _ in ColourScenes(4, offset=50):
        meter.update(predict_image(model, head, image, cfg, torch.device("cpu")), label)
    assert meter.scores().miou > 0.8


def test_finetune_trains_the_backbone():
    model = FakeBackbone()
    before = model.proj[1].weight.detach().clone()
    cfg = small_cfg(model, cache_crops=0, finetune=True, steps=5)
    head = LinearSegHead(in_channels=[4, 5, 6, 7], num_classes=4)
    train_probe(model, head, ColourScenes(2), cfg, torch.device("cpu"))
    assert not torch.equal(model.proj[1].weight, before)


def test_feature_cache_holds_backbone_features_of_the_augmented_crops():
    model = FakeBackbone().eval()
    data = ColourScenes(3)
    cfg = small_cfg(model, cache_crops=2)
    cache = FeatureCache.build(model, data, cfg, torch.device("cpu"), None, lambda s: None)
    assert len(cache) == 6
    crops = AugmentedCrops(data, torch.arange(3), cfg, seed=cfg.seed, per_item=2)
    images = torch.cat([crops[i][0] for i in range(3)])
    labels = torch.cat([crops[i][1] for i in range(3)])
    with torch.no_grad():
        feats, padded = backbone_levels(model, images, cfg.levels)
    assert padded == (32, 32)  # already a multiple of pad_multiple
    assert torch.equal(cache.labels.long(), labels)
    for got, ref in zip(cache.feats, feats, strict=True):
        assert got.dtype == torch.float16
        assert torch.allclose(got.float(), ref, atol=2e-2, rtol=1e-2)
    expected = sum(2 * c * math.ceil(32 / s) ** 2 for c, s in zip((4, 5, 6, 7), (4, 8, 16, 32),
                                                             strict=True))
    expected += 32 * 32  # uint8 labels
    assert FeatureCache.nbytes(model, cfg.levels, cfg.crop, 6) == 6 * expected
    # the concatenated layout holds the head's input: levels resized to stride 4, stacked
    cat = FeatureCache.build(model, data, cfg, torch.device("cpu"), None, lambda s: None,
                             concatenated=True)
    assert cat.concatenated and len(cat.feats) == 1
    manual = torch.cat([feats[0]] + [F.interpolate(f, size=(8, 8), mode="bilinear",
                                                   align_corners=False) for f in feats[1:]], 1)
    assert cat.feats[0].shape == (6, 22, 8, 8)
    assert torch.allclose(cat.feats[0].float(), manual, atol=2e-2, rtol=1e-2)
    assert FeatureCache.nbytes(model, cfg.levels, cfg.crop, 6, concatenated=True) == 6 * (
        2 * 22 * 8 * 8 + 32 * 32)


# ----------------------------------------------------------------------- segment_eval


def test_segment_eval_outputs_and_probe_reload(tmp_path):
    root = make_voc(tmp_path / "VOC2012")
    model = FakeBackbone()
    out = tmp_path / "out"
    res = segment_eval("voc", root=root, model=model, steps=60, batch_size=8, crop_size="32",
                       lr=1e-2, output=out, json_path=tmp_path / "r.json", examples=2,
                       device="cpu")
    assert res.miou > 0.6
    data = json.loads((tmp_path / "r.json").read_text())
    assert {"miou", "pixel_acc", "per_class_iou", "dataset", "split"} <= set(data)
    assert data["dataset"] == "voc" and data["split"] == "val"
    assert list(data["per_class_iou"]) == list(res.per_class_iou)
    assert data["per_class_iou"]["aeroplane"] is not None and data["per_class_iou"]["cat"] is None
    present = [v for v in data["per_class_iou"].values() if v is not None]
    assert data["miou"] == pytest.approx(sum(present) / len(present))
    assert json.loads((out / "results.json").read_text())["miou"] == data["miou"]
    # the probe loads safely and reproduces the scores
    probe = torch.load(out / "probe.pt", weights_only=True)
    assert probe["num_classes"] == 21 and probe["level_strides"] == [4, 8, 16, 32]
    again = segment_eval("voc", root=root, model=model, probe=out / "probe.pt", crop_size="32",
                         output=tmp_path / "out2", device="cpu", examples=0)
    assert again.miou == pytest.approx(res.miou, abs=1e-9)
    assert again.example_paths == []
    # examples: image | gt | prediction, 4-pixel gaps
    assert len(res.example_paths) == 2
    ex = np.asarray(Image.open(res.example_paths[0]))
    assert ex.shape == (48, 3 * 64 + 8, 3)


# -------------------------------------------------------------------------------- the CLI


def run_cli(*args: str):
    return CliRunner().invoke(app, ["segment-eval", *args])


def assert_one_line_error(result, *fragments: str) -> None:
    """Exit 2; exactly one ``error:`` line, the last (progress lines may precede it); no
    traceback."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in errors[0], errors[0]


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an error after the output folder exists must not touch runs/
    assert_one_line_error(run_cli("--dataset", "voc", "--root", str(tmp_path / "missing"),
                                  "--backbone", "random"), "missing", "not found")
    assert_one_line_error(run_cli("--dataset", "voc", "--root", str(tmp_path), "--backbone",
                                  "random"), "JPEGImages")
    assert_one_line_error(run_cli("--dataset", "coco", "--backbone", "random"), "coco")
    root = make_voc(tmp_path / "VOC2012")
    assert_one_line_error(run_cli("--dataset", "voc", "--root", str(root), "--checkpoint",
                                  str(tmp_path / "nope.pt")), "nope.pt")
    assert_one_line_error(run_cli("--dataset", "voc", "--root", str(root)), "--checkpoint")
    not_ckpt = tmp_path / "junk.pt"
    not_ckpt.write_bytes(b"not a checkpoint")
    assert_one_line_error(run_cli("--dataset", "voc", "--root", str(root), "--checkpoint",
                                  str(not_ckpt)), "junk.pt")
    assert_one_line_error(run_cli("--dataset", "voc", "--root", str(root), "--backbone", "random",
                                  "--crop-size", "12x"), "--crop-size")
    assert_one_line_error(run_cli("--dataset", "voc", "--root", str(root), "--backbone", "random",
                                  "--levels", "4,5"), "stride 5")
    assert_one_line_error(run_cli("--dataset", "voc", "--root", str(root), "--backbone", "random",
                                  "--probe", str(not_ckpt), "-o", str(tmp_path / "o")), "junk.pt")


def test_cli_label_out_of_range_exit_2(tmp_path):
    root = make_voc(tmp_path / "VOC2012", n_train=1, n_val=1, bad_value=40)
    for workers in ("0", "1"):  # raised in the main process, or carried back from a worker
        result = run_cli("--dataset", "voc", "--root", str(root), "--backbone", "random",
                         "--steps", "1", "--crop-size", "64", "-o", str(tmp_path / "o"),
                         "--workers", workers)
        assert_one_line_error(result, "t0.png", "0..20 or 255", "40")


def test_cli_random_backbone_end_to_end(tmp_path):
    root = make_voc(tmp_path / "VOC2012", n_train=2, n_val=1)
    out = tmp_path / "o"
    result = run_cli("--dataset", "voc", "--root", str(root), "--backbone", "random", "--steps",
                     "2", "--batch-size", "2", "--crop-size", "64", "-o", str(out), "--json",
                     str(tmp_path / "r.json"), "--examples", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.output and "paper mIoU" in result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["backbone"].startswith("random convnext_atto")
    assert len(data["per_class_iou"]) == 21
    assert (out / "probe.pt").is_file() and len(list((out / "examples").glob("*.png"))) == 1


def test_cli_quickstart_checkpoint_latest_and_probe_rerun(tmp_path, monkeypatch,
                                                          quickstart_checkpoint):
    monkeypatch.setenv("MCJEPA_RUNS", str(quickstart_checkpoint.parent))  # 'latest' finds it
    root = make_voc(tmp_path / "VOC2012", n_train=2, n_val=1)
    out = tmp_path / "o"
    common = ["--dataset", "voc", "--root", str(root), "--checkpoint", "latest", "--crop-size",
              "64", "--examples", "0", "--quiet"]
    result = run_cli(*common, "--steps", "2", "--batch-size", "2", "-o", str(out), "--json",
                     str(tmp_path / "a.json"))
    assert result.exit_code == 0, result.output
    first = json.loads((tmp_path / "a.json").read_text())
    assert Path(first["backbone"]) == quickstart_checkpoint / "checkpoints" / "last.pt"
    result = run_cli(*common, "--probe", str(out / "probe.pt"), "-o", str(tmp_path / "o2"),
                     "--json", str(tmp_path / "b.json"))
    assert result.exit_code == 0, result.output
    second = json.loads((tmp_path / "b.json").read_text())
    assert second["miou"] == pytest.approx(first["miou"], abs=1e-12)
    assert second["per_class_iou"] == pytest.approx(first["per_class_iou"], abs=1e-12)


# ------------------------------------------------------- held-out scores only (issue 23)


def voc_without_split_files(root: Path, n: int = 2) -> Path:
    """A VOC folder like the real two-image sample: JPEGImages + SegmentationClass, no ImageSets."""
    make_voc(root, n_train=n, n_val=0)
    for f in (root / "ImageSets" / "Segmentation").iterdir():
        f.unlink()
    (root / "ImageSets" / "Segmentation").rmdir()
    (root / "ImageSets").rmdir()
    return root


def test_cli_refuses_to_score_training_images_without_the_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = voc_without_split_files(tmp_path / "VOC2012")
    args = ["--dataset", "voc", "--root", str(root), "--backbone", "random", "--steps", "1",
            "--batch-size", "2", "--crop-size", "64", "-o", str(tmp_path / "o")]
    result = run_cli(*args)
    missing = root / "ImageSets" / "Segmentation" / "train.txt"
    assert_one_line_error(result, f"error: {missing}: split file not found (nor val.txt)",
                          "2 of the 2 voc val images", "--allow-train-eval-overlap")
    assert len(result.output.strip().splitlines()) == 1, result.output  # nothing before it
    assert not (tmp_path / "o").exists() and not (tmp_path / "runs").exists()

    # --split train scores the probe's own training split: refused as well
    root2 = make_voc(tmp_path / "VOC2012b", n_train=2, n_val=1)
    result = run_cli("--dataset", "voc", "--root", str(root2), "--split", "train", *args[4:])
    assert_one_line_error(result, "error: --split train:", "2 of the 2 voc train images")


def test_cli_labels_a_score_on_training_images_with_the_flag(tmp_path):
    root = voc_without_split_files(tmp_path / "VOC2012")
    out = tmp_path / "o"
    result = run_cli("--dataset", "voc", "--root", str(root), "--backbone", "random", "--steps",
                     "2", "--batch-size", "2", "--crop-size", "64", "-o", str(out), "--json",
                     str(tmp_path / "r.json"), "--examples", "0", "--allow-train-eval-overlap")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich may wrap the title
    assert "NOT HELD OUT: 2 are training images of the probe" in text
    assert "mIoU (on training images)" in text and "paper mIoU" not in text
    assert "67.1" not in text
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["held_out"] is False and data["train_eval_overlap"] == 2
    assert data["paper_miou"] is None
    assert any(n.startswith("NOT HELD OUT") for n in data["notes"])
    # the probe remembers its training images: scoring them again needs the flag too
    again = ["--dataset", "voc", "--root", str(root), "--backbone", "random", "--crop-size", "64",
             "--examples", "0", "--probe", str(out / "probe.pt"), "-o", str(tmp_path / "o2")]
    assert torch.load(out / "probe.pt", weights_only=True)["train_names"] == ["t0", "t1"]
    assert_one_line_error(run_cli(*again), "split file not found")


def test_probe_trained_on_the_scored_images_is_refused(tmp_path):
    root = make_voc(tmp_path / "VOC2012")
    model = FakeBackbone()
    common = {"model": model, "crop_size": "32", "device": "cpu", "examples": 0}
    res = segment_eval("voc", root=root, steps=2, batch_size=2, output=tmp_path / "o", **common)
    assert res.held_out and res.train_eval_overlap == 0
    assert res.to_json()["paper_miou"] == 67.1 and res.to_json()["held_out"] is True
    probe = tmp_path / "o" / "probe.pt"
    with pytest.raises(UserError, match=r"--probe .*probe\.pt: 3 of the 3 voc train images"):
        segment_eval("voc", root=root, split="train", probe=probe, output=tmp_path / "o2",
                     **common)
    labelled = segment_eval("voc", root=root, split="train", probe=probe, output=tmp_path / "o3",
                            allow_train_eval_overlap=True, **common)
    assert labelled.train_eval_overlap == 3 and not labelled.held_out
    # its own val split is held out
    held = segment_eval("voc", root=root, probe=probe, output=tmp_path / "o4", **common)
    assert held.held_out


def test_synthetic_splits_never_overlap():
    from mcjepa_cli.data.segmentation import build_seg_splits, item_names

    splits = build_seg_splits("synthetic", synthetic_train=3, synthetic_val=3,
                              synthetic_size=(16, 16))
    assert not set(item_names(splits.train)) & set(item_names(splits.val))
    assert item_names(splits.val) == [splits.val[i][2] for i in range(3)]
