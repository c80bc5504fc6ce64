"""Figure 4: data throughput vs what the training step consumes (quickstart recipe).

Samples per second, one process, of: the synthetic world itself (``SyntheticFlowPairs``,
``SyntheticImages`` at the quickstart's sizes), the trainer's two pipelines built from the
quickstart recipe (crops, flips, VICReg two-view augmentation), and an image-folder pipeline
(``build_image_dataset`` over JPEGs written to a temporary folder). The step's consumption is
pairs/s and images/s of the quickstart step timed as in figure 2.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks import pretrain_step
from benchmarks.common import BenchContext, Case, ratio, summarize, time_cases
from benchmarks.setups import bench_recipe
from mcjepa_cli.data.image_folder import build_image_dataset
from mcjepa_cli.data.sources import ImageSource
from mcjepa_cli.data.synthetic import SyntheticFlowPairs, SyntheticImages
from mcjepa_cli.engine.pretrain_data import build_pretrain_datasets
from mcjepa_cli.engine.sampling import KeyedDataset

NAME = "data"
TITLE = "Data throughput vs the quickstart step's consumption"
TARGET = 3.0  # synthetic world samples/s over the step's, at least
JPEG_SIZE = (375, 500)  # ImageNet's typical frame
N_JPEGS = 24


def write_jpegs(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """Write ``n`` smooth random RGB JPEGs (quality 90) into ``folder/class_a``."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    out = folder / "class_a"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        low = torch.rand(1, 3, size[0] // 16, size[1] // 16, generator=g)
        img = F.interpolate(low, size=size, mode="bicubic", align_corners=False)[0]
        img = (img + 0.1 * torch.rand(3, *size, generator=g)).clamp(0, 1)  # (3, H, W)
        rgb = (img * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
        path = out / f"img_{i:04d}.jpg"
        Image.fromarray(rgb).save(path, quality=90)
        paths.append(path)
    return paths


def _loader(ds, count: int, keyed: bool):
    """A callable that fetches the next ``count`` samples (fresh indices every call)."""
    n = len(ds)
    position = itertools.count()

    def fetch() -> None:
        for _ in range(count):
            p = next(position)
            ds[(p % n, p)] if keyed else ds[p % n]
    return fetch


def run(ctx: BenchContext) -> dict[str, Any]:
    shape = pretrain_step.shapes(ctx)["quickstart"]
    step = pretrain_step.time_step(ctx, "quickstart", shape)
    h, w = shape.flow_size
    recipe = bench_recipe("quickstart", ctx, [f"data.flow_size=[{h},{w}]",
                                              f"data.image_size={shape.image_size}"])
    src_size = recipe.data.images[0].source_size
    flow_ds, image_ds, _ = build_pretrain_datasets(recipe)
    with tempfile.TemporaryDirectory(prefix="mcjepa-bench-jpegs-") as tmp:
        write_jpegs(Path(tmp), 4 if ctx.quick else N_JPEGS, (96, 128) if ctx.quick else JPEG_SIZE)
        folder_ds = build_image_dataset([ImageSource(name="imagefolder", root=tmp, split=None)],
                                        crop_size=shape.image_size, seed=0)
        pairs, images = shape.pairs, shape.images
        sources = {
            "world_pairs": (SyntheticFlowPairs(h, w, 10**6, seed=0), pairs, False, "pairs",
                            f"SyntheticFlowPairs {h}x{w}"),
            "world_images": (SyntheticImages(src_size, src_size, 10**6, seed=0), images, False, "images",
                             f"SyntheticImages {src_size}x{src_size}"),
            "pipeline_pairs": (KeyedDataset(flow_ds, 1), pairs, True, "pairs",
                               f"trainer flow pipeline (synthetic, crop {h}x{w}, flips)"),
            "pipeline_images": (KeyedDataset(image_ds, 2), images, True, "images",
                                f"trainer image pipeline (synthetic {src_size} -> 2 views {shape.image_size})"),
            "imagefolder_images": (folder_ds, images, True, "images",
                                   f"image folder: JPEG {JPEG_SIZE[0]}x{JPEG_SIZE[1]} -> 2 views "
                                   f"{shape.image_size}"),
        }
        cases = [Case(k, _loader(ds, count, keyed)) for k, (ds, count, keyed, _, _) in sources.items()]
        times, _ = time_cases(ctx, cases)
    consumed = {"pairs": step["pairs_per_s"], "images": step["images_per_s"]}
    step_s = step["ours"]["median_s"]
    entries, ratios = [], []
    for key, (_, count, _, unit, label) in sources.items():
        s = summarize(times[key])
        s.update(label=label, key=key, unit=unit, batch=count,
                 samples_per_s=count / s["median_s"], step_consumes_per_s=consumed[unit])
        entries.append(s)
        # supply / demand per repeat: (count / t_data) / (count / t_step) = t_step / t_data
        r = ratio([step_s] * len(times[key]), times[key], TARGET if key.startswith("world") else None,
                  f"{label}: produced / consumed", better="higher")
        ratios.append(r)
    return {
        "name": NAME, "title": TITLE,
        "setup": {"recipe": "quickstart", "step": step["shape"], "step_median_s": step_s,
                  "consumed_per_s": consumed, "process": "main process, no DataLoader workers",
                  "threads": torch.get_num_threads()},
        "entries": entries,
        "ratios": ratios,
    }
