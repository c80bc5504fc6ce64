"""Optical-flow evaluation: score a model, zero flow or flow files on disk against a dataset's GT.

``flow_eval(...)`` is the plain function behind ``mcjepa flow-eval``; it returns one result row
(a dict) per dataset pass, plus one per sequence with ``per_sequence``. Metrics and their
aggregation are defined in ``mcjepa_cli.eval.flow_metrics``; datasets and layouts in
``mcjepa_cli.data.flow_eval_datasets``; file formats in ``mcjepa_cli.io.flow_io``.

Inference runs under ``torch.inference_mode()``; the model pads inputs to its coarsest stride
and crops the flow back. Pairs of one size are batched. Where pairs chain (frame 2 of one pair
is frame 1 of the next, as in Sintel scenes), each frame's pyramid is computed once
(``model.prepare_frame``) and reused for both of its pairs (``model.flow_between``); chains of
equal length and frame size run side by side in one batch.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from mcjepa_cli.data.flow_eval_datasets import (
    PREDICTION_LAYOUTS,
    FlowEvalSet,
    build_flow_eval_sets,
)
from mcjepa_cli.errors import UserError
from mcjepa_cli.eval.flow_metrics import FlowMetricAccumulator, image_stats
from mcjepa_cli.io.flow_io import FLOW_EXTENSIONS, read_flow, write_flo, write_kitti_png
from mcjepa_cli.io.json_out import write_json_text


class FlowModel(Protocol):
    """What ``flow_eval`` needs from a model (``MCJEPA`` satisfies it)."""

    def estimate_flow(self, img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor: ...


def _chains(evalset: FlowEvalSet) -> list[list[int]]:
    """Split the pairs into chains where pair k's second frame is pair k+1's first frame.

    Chains start at pairs that follow no other pair; pairs left over (cycles, e.g. FlyingThings3D
    future 6->7 and past 7->6) start further chains in index order. Every pair is in one chain.
    """
    by_first = {p.frame1: i for i, p in enumerate(evalset.pairs)}
    successor = {i: by_first.get(p.frame2) for i, p in enumerate(evalset.pairs)}
    followers = {j for j in successor.values() if j is not None}
    heads = [i for i in range(len(evalset.pairs)) if i not in followers]
    chains, seen = [], set()
    for start in heads + list(range(len(evalset.pairs))):
        chain, j = [], start
        while j is not None and j not in seen:
            chain.append(j)
            seen.add(j)
            j = successor[j]
        if chain:
            chains.append(chain)
    return chains


def _stack(
    evalset: FlowEvalSet, keys: list[str], size: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """Load frames that must all be ``size`` (H, W) into one (B, 3, H, W) batch."""
    frames = []
    for key in keys:
        frame = evalset.load_frame(key)  # (3, H, W) float in [0, 1]
        if tuple(frame.shape[-2:]) != size:
            raise UserError(key, f"frame is {frame.shape[-1]}x{frame.shape[-2]}, but the other "
                            f"frame of its pair is {size[1]}x{size[0]}")
        frames.append(frame)
    return torch.stack(frames).to(device)


def predict_flows(
    model: FlowModel, evalset: FlowEvalSet, device: torch.device, batch_size: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(pair index, predicted flow (H, W, 2) float32)`` for every pair of the set."""
    reuse = hasattr(model, "prepare_frame") and hasattr(model, "flow_between")
    chains = _chains(evalset) if reuse else [[i] for i in range(len(evalset))]
    groups: dict[tuple[int, tuple[int, int]], list[list[int]]] = defaultdict(list)
    for chain in chains:  # batch chains of one length and frame size together
        size = evalset.frame_size(evalset.pairs[chain[0]].frame1)
        groups[(len(chain), size)].append(chain)
    pairs = evalset.pairs
    for (length, size), members in groups.items():
        for b in range(0, len(members), batch_size):
            batch = members[b : b + batch_size]
            if length == 1:
                idx = [c[0] for c in batch]
                img1 = _stack(evalset, [pairs[i].frame1 for i in idx], size, device)
                img2 = _stack(evalset, [pairs[i].frame2 for i in idx], size, device)
                yield from _to_numpy(idx, model.estimate_flow(img1, img2))  # (B, 2, H, W)
                continue
            first = [pairs[c[0]].frame1 for c in batch]
            prev = model.prepare_frame(_stack(evalset, first, size, device))
            for t in range(length):
                idx = [c[t] for c in batch]
                frames = _stack(evalset, [pairs[i].frame2 for i in idx], size, device)
                cur = model.prepare_frame(frames)
                yield from _to_numpy(idx, model.flow_between(prev, cur))  # (B, 2, H, W)
                prev = cur


def _to_numpy(indices: list[int], flow: torch.Tensor) -> Iterator[tuple[int, np.ndarray]]:
    if flow.ndim != 4 or flow.shape[0] != len(indices) or flow.shape[1] != 2:
        raise RuntimeError(f"model returned flow of shape {tuple(flow.shape)}, expected "
                           f"({len(indices)}, 2, H, W)")
    arr = flow.float().permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 2)
    for k, i in enumerate(indices):
        yield i, arr[k]


def _read_prediction(evalset: FlowEvalSet, index: int, folder: Path) -> np.ndarray:
    """The prediction file of pair ``index`` (any supported extension); unknown pixels -> 0."""
    rel = Path(evalset.pairs[index].prediction)
    candidates = [folder / rel] + [folder / rel.with_suffix(e) for e in FLOW_EXTENSIONS
                                   if e != rel.suffix]
    for path in candidates:
        if path.is_file():
            flow, valid = read_flow(path)
            flow = flow.copy()
            flow[~valid] = 0.0  # a pixel the method left unknown counts as zero flow
            return flow
    raise UserError(folder / rel, f"prediction file not found; expected the {evalset.name} "
                    f"prediction layout <DIR>/{PREDICTION_LAYOUTS[evalset.name]}")


def _save_prediction(evalset: FlowEvalSet, index: int, folder: Path, flow: np.ndarray) -> None:
    path = folder / Path(evalset.pairs[index].prediction)
    if evalset.prediction_format == ".png":
        write_kitti_png(path, flow)
    else:
        write_flo(path, flow)


def _resolve_source(
    checkpoint: str | None, model: str | FlowModel | None, predictions: str | Path | None,
) -> tuple[str, FlowModel | None, Path | None, Path | None]:
    """What is evaluated: (description, model object, predictions folder, checkpoint file).

    Nothing is loaded yet: the checkpoint is only located, so that the outputs can be checked
    against it first.
    """
    given = [x for x in (checkpoint, model, predictions) if x is not None]
    if len(given) != 1:
        raise UserError("--checkpoint / --model / --predictions",
                        f"give exactly one thing to evaluate, got {len(given)}")
    if predictions is not None:
        folder = Path(predictions).expanduser()
        if not folder.is_dir():
            raise UserError(folder, "predictions folder not found")
        return f"predictions {folder}", None, folder, None
    if isinstance(model, str):
        if model != "zero":
            raise UserError(f"--model {model}", "expected 'zero' (the zero-flow baseline); "
                            "use --checkpoint for a trained model")
        return "zero flow", None, None, None
    if model is not None:
        return type(model).__name__, model, None, None
    from mcjepa_cli.engine.checkpoint import resolve_checkpoint

    return f"checkpoint {checkpoint}", None, None, resolve_checkpoint(str(checkpoint))


def _check_outputs(
    sets: list[FlowEvalSet], checkpoint: Path | None, pred_dir: Path | None,
    save_dir: Path | None, json_path: str | Path | None,
) -> None:
    """Refuse, before anything is written, outputs that would replace or land among the inputs.

    No output may be an input (a frame, a ground-truth or mask file, a prediction file read
    with ``--predictions``, the checkpoint) or lie inside the evaluated dataset's folder; each
    output's place must be writable.
    """
    from mcjepa_cli.io.guard import Inputs, check_writable
    from mcjepa_cli.io.json_out import is_stdout

    if save_dir is None and (json_path is None or is_stdout(json_path)):
        return  # nothing will be written
    inputs = Inputs()
    inputs.add_file(checkpoint, "the checkpoint")
    for evalset in sets:
        inputs.add_folder(evalset.root, "the dataset folder")
        for pair in evalset.pairs:
            if evalset.root is not None:  # on-disk frames (synthetic keys name no file)
                inputs.add_file(pair.frame1, "a frame")
                inputs.add_file(pair.frame2, "a frame")
            for gt in (pair.flow, pair.occlusion, pair.invalid, pair.noc_flow):
                inputs.add_file(gt, "a ground-truth file")
            if pred_dir is not None:
                rel = Path(pair.prediction)
                for ext in FLOW_EXTENSIONS:
                    inputs.add_file(pred_dir / rel.with_suffix(ext), "a --predictions file")
    if json_path is not None and not is_stdout(json_path):
        inputs.check_output("--json", json_path)
        check_writable("--json", json_path)
    if save_dir is not None:
        inputs.check_output("--save-predictions", save_dir)
        for evalset in sets:
            for pair in evalset.pairs:
                inputs.check_output("--save-predictions", save_dir / pair.prediction,
                                    given=save_dir)
        check_writable("--save-predictions", save_dir, folder=True)


def flow_eval(
    dataset: str,
    *,
    root: str | Path | None = None,
    pass_name: str | None = None,
    split: str | None = None,
    checkpoint: str | None = None,
    model: str | FlowModel | None = None,
    predictions: str | Path | None = None,
    save_predictions: str | Path | None = None,
    per_image: bool = False,
    per_sequence: bool = False,
    batch_size: int = 4,
    device: str = "auto",
    synthetic_count: int = 32,
    synthetic_size: tuple[int, int] = (128, 160),
    synthetic_seed: int = 0,
    json_path: str | Path | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Evaluate optical flow on a dataset's pairs with ground truth.

    Exactly one of ``checkpoint``, ``model`` and ``predictions`` says what is evaluated.

    Args:
        dataset: ``sintel``, ``kitti-2015``, ``kitti-2012``, ``chairs``, ``things``, ``hd1k``,
            ``middlebury`` or ``synthetic``.
        root: the dataset's own folder; None -> ``$MCJEPA_DATA/<Name>``.
        pass_name: ``clean``/``final``/``both`` (Sintel, Things); None = every pass present.
        split: dataset split (``train`` by default; Chairs ``val``, Things ``test`` possible).
        checkpoint: an mcjepa checkpoint file, run directory or ``latest``.
        model: ``"zero"`` (zero-flow baseline) or a model object with ``estimate_flow`` (and
            optionally ``prepare_frame``/``flow_between`` for per-frame reuse).
        predictions: a folder of flow files in the dataset's prediction layout.
        save_predictions: write every prediction there (submission formats: ``.flo``, KITTI PNG).
        per_image: average metrics over images instead of pooling pixels.
        per_sequence: add one row per sequence/scene.
        batch_size: pairs (or frame chains) per forward pass.
        device: ``auto``, ``cpu``, ``cuda``, ...
        synthetic_count: number of pairs of the synthetic set.
        synthetic_size: (H, W) of the synthetic set.
        synthetic_seed: seed of the synthetic set.
        json_path: also write the rows there as JSON (atomically).
        progress: show a progress bar on stderr.

    Returns:
        Rows (dicts) with ``dataset``, ``pass``, ``split``, ``sequence`` (None for the whole
        set), ``epe``, ``px1``, ``px3``, ``px5``, ``fl_all``, ``n_pixels``, ``n_images``,
        ``aggregation``, ``evaluated``, ``note`` and, where occlusion masks exist, the same
        metrics with ``_occ``/``_noc`` (and ``_occluded``/``_nonoccluded``) suffixes.

    Raises:
        UserError: bad options, missing or malformed data, missing prediction files, a file
            that is not an mcjepa checkpoint, an output (``json_path``, ``save_predictions``)
            that is an input or lies inside the dataset's folder, or cannot be written there.
    """
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}", "expected a positive integer")
    aggregation = "per-image" if per_image else "pooled"
    from mcjepa_cli.engine.device import resolve_device

    dev = resolve_device(device)
    sets = build_flow_eval_sets(
        dataset, root, pass_name=pass_name, split=split, synthetic_count=synthetic_count,
        synthetic_size=synthetic_size, synthetic_seed=synthetic_seed,
    )
    evaluated, net, pred_dir, ckpt_file = _resolve_source(checkpoint, model, predictions)
    save_dir = Path(save_predictions).expanduser() if save_predictions is not None else None
    _check_outputs(sets, ckpt_file, pred_dir, save_dir, json_path)
    if ckpt_file is not None:
        from mcjepa_cli.engine.checkpoint import load_model

        net, _ = load_model(str(ckpt_file), dev)
    elif isinstance(net, torch.nn.Module):
        net.to(dev).eval()

    rows: list[dict[str, Any]] = []
    total = sum(len(s) for s in sets)
    with _progress_bar(progress, total) as advance, torch.inference_mode():
        for evalset in sets:
            overall = FlowMetricAccumulator()
            by_seq: dict[str, FlowMetricAccumulator] = defaultdict(FlowMetricAccumulator)
            if net is not None:
                predicted = predict_flows(net, evalset, dev, batch_size)
            else:
                predicted = ((i, None) for i in range(len(evalset)))
            for index, flow in predicted:
                target = evalset.load_target(index)
                if pred_dir is not None:
                    flow = _read_prediction(evalset, index, pred_dir)
                elif flow is None:  # zero-flow baseline
                    flow = np.zeros_like(target.flow)
                if flow.shape != target.flow.shape:
                    (ph, pw), (gh, gw) = flow.shape[:2], target.flow.shape[:2]
                    pair = evalset.pairs[index]
                    raise UserError(pair.flow or pair.frame1,
                                    f"prediction is {pw}x{ph} but the ground truth is {gw}x{gh}")
                if save_dir is not None:
                    _save_prediction(evalset, index, save_dir, flow)
                stats = image_stats(flow, target.flow, target.valid, target.occlusion)
                overall.add(stats)
                by_seq[evalset.pairs[index].sequence].add(stats)
                advance()
            base = {"dataset": evalset.name, "pass": evalset.pass_name, "split": evalset.split,
                    "evaluated": evaluated, "note": evalset.note or None}
            rows.append({**base, "sequence": None, **overall.summary(aggregation)})
            if per_sequence:
                for seq in sorted(by_seq):
                    rows.append({**base, "sequence": seq, **by_seq[seq].summary(aggregation)})
    if json_path is not None:
        write_rows_json(json_path, rows)
    return rows


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    """A rich progress bar on stderr (or nothing); yields a function advancing it by one pair."""
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("flow-eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("pairs", total=total)
        yield lambda: bar.advance(task)


def write_rows_json(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write result rows as a JSON list, atomically (``-``: to standard output)."""
    write_json_text(path, json.dumps(rows, indent=2) + "\n")


__all__ = ["FlowModel", "flow_eval", "write_rows_json"]
