"""The pretraining engine: one loop for every recipe, 1 process or DDP under torchrun.

Each step draws one batch of frame pairs and one batch of two-view images, computes the
MC-JEPA objective (``mcjepa_cli.losses.objective``), and takes an AdamW step. The loop logs every
term to ``metrics.jsonl`` (and TensorBoard when installed), writes atomic checkpoints, skips
non-finite steps, stops cleanly on SIGINT/SIGTERM, and resumes exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from mcjepa_cli.config import Recipe, dump_recipe, recipe_from_dict, to_dict
from mcjepa_cli.engine import distributed as du
from mcjepa_cli.engine.checkpoint import (
    init_from_checkpoint,
    load_checkpoint,
    load_matching_weights,
    newest_run,
    runs_root,
    save_checkpoint,
    say_latest,
)
from mcjepa_cli.engine.device import resolve_device, resolve_precision
from mcjepa_cli.engine.diagnostics import encoder_gradient_norms
from mcjepa_cli.engine.pretrain_data import build_pretrain_datasets
from mcjepa_cli.engine.run_lock import RunLock, is_run_dir, user_files
from mcjepa_cli.engine.sampling import KeyedDataset, StepBatchSampler
from mcjepa_cli.engine.schedules import warmup_cosine
from mcjepa_cli.errors import RunFailed, UserError
from mcjepa_cli.io.atomic import atomic_write_text
from mcjepa_cli.io.jsonl import step_records
from mcjepa_cli.losses.objective import FlowStage, LossConfig, mcjepa_objective, objective_parts
from mcjepa_cli.models import MCJEPA, build_model

SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class PretrainStep(nn.Module):
    """Wraps the model so DDP sees one ``forward`` that returns the objective."""

    def __init__(self, model: MCJEPA, loss_cfg: LossConfig) -> None:
        super().__init__()
        self.model = model
        self.loss_cfg = loss_cfg

    def forward(self, batch: dict[str, torch.Tensor], flow_on: bool, stage: FlowStage):
        return mcjepa_objective(self.model, batch, self.loss_cfg, flow_on, stage)


@dataclass
class RunPlan:
    total_steps: int
    warmup_steps: int
    flow_start_step: int
    steps_per_epoch: int
    ssim_start_step: int = 0  # global steps (schedule.ssim_start counted from the flow start)
    occlusion_start_step: int = 0

    def stage(self, step: int) -> FlowStage:
        """The staged flow objective's parts that are on at global ``step``."""
        return FlowStage(ssim=step >= self.ssim_start_step,
                         occlusion=step >= self.occlusion_start_step)


MAX_STEPS = 10**9  # a sanity bound on a run's length (a billion optimiser steps)


def plan_schedule(recipe: Recipe, n_images: int | None) -> RunPlan:
    """Convert the recipe's schedule (steps or epochs) into step counts."""
    s = recipe.schedule
    if s.unit == "steps":
        spe = s.steps_per_epoch or 1
        conv = 1.0
    else:
        if s.steps_per_epoch:
            spe = s.steps_per_epoch
        elif n_images:
            spe = max(1, n_images // recipe.data.image_batch_size)
        else:
            raise UserError("schedule.steps_per_epoch",
                            "needed when unit is 'epochs' and there is no content data")
        conv = float(spe)
    if s.total * conv > MAX_STEPS:
        raise UserError("schedule.total", f"{s.total:g} {s.unit} is {s.total * conv:.3g} steps; "
                        f"expected at most {MAX_STEPS:,} steps")
    total = max(1, int(round(s.total * conv)))
    flow_start = int(round(s.flow_start * conv))
    return RunPlan(total, int(round(s.warmup * conv)), flow_start, spe,
                   ssim_start_step=flow_start + int(round(s.ssim_start * conv)),
                   occlusion_start_step=flow_start + int(round(s.occlusion_start * conv)))


def _stage_note(plan: RunPlan, loss: LossConfig) -> str:
    """``", SSIM from step N, occlusion masks from step M"`` for the parts that are staged."""
    parts = []
    if loss.photo_ssim and plan.ssim_start_step > plan.flow_start_step:
        parts.append(f"SSIM from step {plan.ssim_start_step}")
    if loss.occlusion:
        parts.append(f"occlusion masks from step {plan.occlusion_start_step}")
    return "".join(", " + p for p in parts)


def param_groups(model: MCJEPA, recipe: Recipe) -> list[dict[str, Any]]:
    """AdamW groups: encoder / flow head / expander, each split into decay and no-decay."""
    o = recipe.optim
    parts = [("encoder", model.encoder, o.lr_encoder), ("flow_head", model.flow_head, o.lr_flow_head)]
    if model.expander is not None:
        parts.append(("expander", model.expander, o.lr_expander))
    groups = []
    for name, module, lr in parts:
        decay, no_decay = [], []
        for pname, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or pname.endswith(".bias") else decay).append(p)
        for suffix, params, wd in ((name, decay, o.weight_decay), (f"{name}_no_decay", no_decay, 0.0)):
            if params:
                groups.append({"name": suffix, "params": params, "lr": lr, "base_lr": lr,
                               "weight_decay": wd})
    return groups


_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def sync_expander_batchnorm(model: MCJEPA, enabled: bool) -> int:
    """Make the expander's BatchNorm layers SyncBatchNorm (``train.sync_bn``); returns how many.

    As in VICReg under DDP, the expander's batch statistics then cover the global batch; no other
    part of the model is touched. Call it before the DDP wrap; the layers keep their parameter
    and buffer objects (an optimizer built before still holds them) and BatchNorm's state-dict
    keys, so checkpoints load into a plain (non-DDP) model.
    """
    if not enabled or model.expander is None:
        return 0
    count = sum(isinstance(m, _BATCHNORMS) for m in model.expander.modules())
    model.expander = nn.SyncBatchNorm.convert_sync_batchnorm(model.expander)
    return count


def _clip_per_part(optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """Clip the gradient norm of each part (encoder, flow head, expander) separately.

    One global norm would let VICReg's large encoder/expander gradients shrink the flow head's
    (the two objectives differ in scale by ~50x), starving the flow branch. Returns the total
    norm before clipping (non-finite when any gradient is).
    """
    parts: dict[str, list[torch.Tensor]] = {}
    for g in optimizer.param_groups:
        part = g["name"].removesuffix("_no_decay")
        parts.setdefault(part, []).extend(p for p in g["params"] if p.grad is not None)
    norms = []
    for params in parts.values():
        if not params:
            continue
        if max_norm > 0:
            norms.append(torch.nn.utils.clip_grad_norm_(params, max_norm))
        else:
            norms.append(torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params])))
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


def _timestamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _rng_state(device: torch.device) -> dict[str, Any]:
    """This process's generators as tensors and plain values (``weights_only`` loading rejects
    numpy's and Python's own state objects; DESIGN.md section 6): CPU torch, CUDA, Python."""
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(internal),
                             "python_version": version, "python_gauss": gauss_next}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    gauss = state.get("python_gauss")
    torch.set_rng_state(state["torch"].cpu())
    random.setstate((int(state["python_version"]), tuple(int(v) for v in state["python"]),
                     None if gauss is None else float(gauss)))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _to_float(v: torch.Tensor | float) -> float:
    return float(v.detach().float().item()) if isinstance(v, torch.Tensor) else float(v)


def _worker_ignores_termination(worker_id: int) -> None:
    """DataLoader worker init: leave SIGTERM to the main process.

    Schedulers (Slurm, Kubernetes, ``timeout``) signal the whole process group at preemption.
    A worker that died of that SIGTERM would make the main process fail with a DataLoader error
    before it could save; ignoring it lets the main process checkpoint and exit 143, after which
    the workers end on their own (PyTorch's workers exit when their parent is gone). SIGTERM was
    blocked while the workers were forked (see ``_forking_workers``); unblock it now that it
    is ignored.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


_LIVE_LOADERS: list[Any] = []  # DataLoader iterators of the running pretrain() call


def _shutdown_loaders() -> None:
    """Stop the DataLoader workers now, on every way out of ``pretrain`` (an error included).

    The workers ignore SIGTERM (``_worker_ignores_termination``), so they must not be left to
    multiprocessing's exit handler, which stops daemonic children with SIGTERM and then waits
    for them: it would wait forever. PyTorch's own shutdown asks each worker to finish.
    """
    while _LIVE_LOADERS:
        shutdown = getattr(_LIVE_LOADERS.pop(), "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


@contextlib.contextmanager
def _forking_workers() -> Iterator[None]:
    """Block SIGTERM in the main process while DataLoader workers start.

    A forked worker inherits the mask, so a group-wide SIGTERM that arrives before the worker
    runs ``_worker_ignores_termination`` stays pending in it instead of killing it; in the main
    process the signal is delivered when the block ends.
    """
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _Signals:
    """Records SIGINT/SIGTERM so the loop can checkpoint and exit cleanly (130 / 143)."""

    def __init__(self) -> None:
        self.received = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for sig in SIGNAL_EXIT:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread (e.g. some test runners)
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = SIGNAL_EXIT.get(signal.Signals(signum), 1)

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def prepare_run_dir(name: str, output: str | None, resume: str | None,
                    overwrite: bool) -> tuple[Path, Path | None]:
    """Choose the run directory and the checkpoint to resume from (if any).

    A run writes only into a new or empty folder or into a run directory (``is_run_dir``):
    ``--overwrite`` and ``--resume ... --output`` refuse any other non-empty folder, and a
    checkpoint that does not sit in a run directory resumes only with ``--output``.
    """
    if resume:
        if resume == "latest":
            run_dir = newest_run()
            say_latest(run_dir)
        else:
            p = Path(resume)
            if p.is_file():
                own = p.parent.parent if p.parent.name == "checkpoints" else p.parent
                if output:
                    return _resume_output(Path(output), own), p
                if not is_run_dir(own):
                    raise UserError(p, "is not in an mcjepa run directory (no checkpoints/last.pt "
                                    "beside it): pass --output to choose where the resumed run writes")
                return own, p
            run_dir = p
        ckpt = run_dir / "checkpoints" / "last.pt"
        if not ckpt.is_file():
            raise UserError(run_dir, "cannot resume: no checkpoints/last.pt in this run directory")
        return (_resume_output(Path(output), run_dir) if output else run_dir), ckpt
    run_dir = Path(output) if output else _default_run_dir(name)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(run_dir, "expected a run directory, found a file")
    try:  # fail now, with one line, where the folder cannot be made (a path through a file,
        # a read-only or pseudo file system), not after the model and data are built
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(run_dir, f"cannot create the run directory ({e.strerror or e})") from None
    if user_files(run_dir):
        if not overwrite:
            raise UserError(run_dir, "run directory exists; pass --resume to continue it or "
                            "--overwrite to replace it")
        if not is_run_dir(run_dir):
            raise UserError(run_dir, "is not an mcjepa run directory (no checkpoints/last.pt): "
                            "--overwrite replaces only runs; choose a new or empty --output")
    return run_dir, None


def _default_run_dir(name: str) -> Path:
    """``runs/<name>-<time>`` (``$MCJEPA_RUNS/...`` when set, where ``latest`` looks); ``-2``,
    ``-3``, ... when runs started in the same second."""
    base = runs_root() / f"{name}-{_timestamp()}"
    run_dir, n = base, 1
    while user_files(run_dir):
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    return run_dir


def _resume_output(output: Path, own: Path) -> Path:
    """``--output`` of a resumed run: the checkpoint's own run directory or a new or empty
    folder; never a folder of other files, nor another run's."""
    if output.exists() and not output.is_dir():
        raise UserError(output, "expected a run directory, found a file")
    same = output.exists() and own.exists() and output.resolve() == own.resolve()
    if not same and user_files(output):
        hint = (f" (to continue the run there: --resume {output})" if is_run_dir(output)
                else "")
        what = "another run's directory" if hint else "a folder of other files"
        raise UserError(output, f"is {what}: a resumed run writes into its own run directory or "
                        f"a new or empty --output{hint}")
    return output


def _keep_copy(last: Path, target: Path, state: dict[str, Any]) -> None:
    """Make ``target`` a periodic copy of the checkpoint just written to ``last``.

    A hard link costs no second write; checkpoints are only ever replaced by renaming a new
    file into place, never rewritten, so the link keeps this step's content. Where links are
    not supported the checkpoint is saved again.
    """
    tmp = target.with_name(f".{target.name}.tmp-link-{secrets.token_hex(4)}")
    try:
        tmp.unlink(missing_ok=True)
        os.link(last, tmp)
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)
        save_checkpoint(target, state)


RUN_FILES = ("metrics.jsonl", "summary.json", "summary.md", "recipe.yaml")
_STEP_NAME = re.compile(r"step_\d+\.pt")  # save()'s periodic copies; last.pt is the other
_TEMP_NAME = re.compile(r"\..+\.tmp-.*")  # io.atomic.atomic_path and _keep_copy temporaries
_EVENTS_NAME = re.compile(r"events\.out\.tfevents\..+")  # TensorBoard's event files


def periodic_checkpoints(ckdir: Path) -> list[Path]:
    """The run's ``step_<N>.pt`` files, oldest step first (by number: ``step_10000000.pt`` is
    newer than ``step_9999999.pt``); a user's ``step_best.pt`` is not one of them."""
    found = [p for p in ckdir.glob("step_*.pt") if _STEP_NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.stem[len("step_"):]))


def _run_written(run_dir: Path) -> list[Path]:
    """The files in ``run_dir`` that a run writes; nothing else in it is ever removed."""
    found = [run_dir / n for n in RUN_FILES
             if (run_dir / n).is_file() or (run_dir / n).is_symlink()]
    ckdir, tbdir = run_dir / "checkpoints", run_dir / "tensorboard"
    if ckdir.is_dir() and not ckdir.is_symlink():
        found += sorted(p for p in ckdir.iterdir()
                        if (p.is_file() or p.is_symlink())
                        and (p.name == "last.pt" or _STEP_NAME.fullmatch(p.name)
                             or _TEMP_NAME.fullmatch(p.name)))
    if tbdir.is_dir() and not tbdir.is_symlink():
        found += sorted(p for p in tbdir.iterdir()
                        if (p.is_file() or p.is_symlink()) and _EVENTS_NAME.fullmatch(p.name))
    return found


def _clean_run_dir(run_dir: Path, fresh: bool) -> list[Path]:
    """Remove what a previous run left: its outputs when starting afresh (``--overwrite``), and
    always the temporary files of checkpoint writes cut short by a kill.

    Only names that runs write are removed (``last.pt``, ``step_*.pt``, the temporaries of
    atomic writes, TensorBoard event files, ``metrics.jsonl``, ``summary.*``, ``recipe.yaml``);
    a user's own files anywhere in the folder are kept. Returns what was removed.
    """
    ckdir = run_dir / "checkpoints"
    if fresh:
        removed = _run_written(run_dir)
    elif ckdir.is_dir():
        removed = [p for p in ckdir.iterdir() if p.is_file() and _TEMP_NAME.fullmatch(p.name)]
    else:
        removed = []
    for path in removed:
        path.unlink(missing_ok=True)
    if fresh:
        for folder in (ckdir, run_dir / "tensorboard"):  # left only where now empty
            if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
                folder.rmdir()
    return removed


def pretrain(recipe: Recipe | None, *, output: str | None = None, resume: str | None = None,
             overwrite: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Run MC-JEPA pretraining as described by ``recipe``; returns the end-of-run summary.

    Args:
        recipe: the resolved recipe (None when resuming: the checkpoint's recipe is used).
        output: run directory (default ``runs/<recipe>-<timestamp>``).
        resume: a checkpoint, run directory or ``latest`` to continue exactly.
        overwrite: allow reusing a non-empty run directory without resuming.
        show_progress: draw the rich progress bar (rank 0 only).
    """
    if recipe is None and resume is None:
        raise UserError("recipe", "a recipe is needed unless resuming")
    if recipe is None:
        _, ckpt_path = prepare_run_dir("", output, resume, overwrite)
        recipe = recipe_from_dict(load_checkpoint(ckpt_path)["recipe"], source=f"{ckpt_path}: recipe")
    device = resolve_device(recipe.train.device)
    if device.type == "cuda" and du.launched_by_torchrun():
        device = torch.device("cuda", du.local_rank())
        torch.cuda.set_device(device)
    distributed = du.init(device.type)
    try:
        du.sync_bn_enabled(recipe.train.sync_bn, device.type, du.backend())  # refused here, early
        return _pretrain(recipe, device, output, resume, overwrite, show_progress, distributed)
    finally:
        _shutdown_loaders()
        du.shutdown()


def _pretrain(recipe: Recipe, device: torch.device, output: str | None, resume: str | None,
              overwrite: bool, show_progress: bool, distributed: bool) -> dict[str, Any]:
    run_dir, resume_ckpt = prepare_run_dir(recipe.name, output, resume, overwrite)
    lock = RunLock(run_dir)
    try:
        return _locked_pretrain(recipe, device, run_dir, resume_ckpt, lock, show_progress,
                                distributed)
    finally:
        lock.release()


def _check_run_paths(run_dir: Path) -> None:
    """Refuse, before any work, a run directory where a name the run writes is taken by
    something else (``recipe.yaml`` a folder, ``checkpoints`` a file)."""
    for name in (*RUN_FILES, "checkpoints/last.pt"):
        path = run_dir / name
        if path.is_dir():
            raise UserError(path, "expected a file the run writes, found a folder: move it away")
    for name in ("checkpoints", "tensorboard"):
        path = run_dir / name
        if path.exists() and not path.is_dir():
            raise UserError(path, "expected the run's folder, found a file: move it away")


def _take_lock(lock: RunLock, main: bool, device: torch.device) -> None:
    """Rank 0 takes the run directory's lock; every rank stops with it when it is held."""
    refused: UserError | None = None
    if main:
        try:
            lock.acquire()
        except UserError as e:
            refused = e
    if du.max_int(int(refused is not None), device):
        raise refused or UserError(lock.path.parent, "the run directory is locked by another "
                                   "process (see rank 0's message)")
    if main and lock.previous_holder:
        print(f"run lock: took over from {lock.previous_holder} (no longer running)",
              file=sys.stderr)


def _locked_pretrain(recipe: Recipe, device: torch.device, run_dir: Path,
                     resume_ckpt: Path | None, lock: RunLock, show_progress: bool,
                     distributed: bool) -> dict[str, Any]:
    rank, world = du.rank(), du.world_size()
    main = rank == 0
    _take_lock(lock, main, device)
    _check_run_paths(run_dir)
    ckpt: dict[str, Any] | None = None
    if resume_ckpt is not None:
        ckpt = load_checkpoint(resume_ckpt)
        recipe = recipe_from_dict(ckpt["recipe"], source=f"{resume_ckpt}: recipe")
        lacking = [k for k in ("optimizer", "step") if k not in ckpt]
        if lacking:
            raise UserError(resume_ckpt, f"cannot resume: the checkpoint has no {' or '.join(lacking)} "
                            "(evaluate it with --checkpoint, or start a new run)")
    if main:
        fresh = resume_ckpt is None  # a non-empty folder got here only with --overwrite
        removed = _clean_run_dir(run_dir, fresh=fresh)
        if removed and fresh:
            shown = ", ".join(str(p.relative_to(run_dir)) for p in removed[:8])
            more = f" and {len(removed) - 8} more" if len(removed) > 8 else ""
            print(f"--overwrite: removed {len(removed)} file(s) of the previous run in {run_dir}: "
                  f"{shown}{more}", file=sys.stderr)
    # batch sizes are global: each rank takes its share
    for key, value in (("data.flow_batch_size", recipe.data.flow_batch_size),
                       ("data.image_batch_size", recipe.data.image_batch_size)):
        if value % world:
            raise UserError(key, f"{value} is not divisible by the {world} processes")
    flow_local = recipe.data.flow_batch_size // world
    image_local = recipe.data.image_batch_size // world
    autocast_dtype = resolve_precision(recipe.train.precision, device)

    torch.manual_seed(recipe.train.seed)  # same initial weights on every rank
    random.seed(recipe.train.seed)
    try:
        model = build_model(recipe.model)
    except ValueError as e:  # e.g. an unknown timm architecture, bad strides
        raise UserError("model", str(e)) from None
    if recipe.model.encoder.init:
        from mcjepa_cli.models.timm_io import load_timm_encoder_weights

        load_timm_encoder_weights(model, recipe.model.encoder.init)
    if recipe.model.init and ckpt is None:  # a resumed run has its own weights
        said = init_from_checkpoint(model, recipe.model.init)
        if main:
            print(said, file=sys.stderr)
    model.to(device)
    if recipe.train.channels_last:
        model.to(memory_format=torch.channels_last)
    # before the optimizer and the DDP wrap; "auto": only under NCCL (DESIGN.md section 6)
    synced_bn = sync_expander_batchnorm(
        model, du.sync_bn_enabled(recipe.train.sync_bn, device.type, du.backend()))

    flow_ds, image_ds, data_stats = build_pretrain_datasets(recipe)
    eval_sets = real_eval_sets(recipe) if main else []  # checked before the first step
    plan = plan_schedule(recipe, len(image_ds) if image_ds is not None else None)
    use_content = model.expander is not None and image_ds is not None

    # the fused AdamW kernel (CPU and CUDA): one pass over each parameter instead of a dozen;
    # on 2 CPU cores it steps the paper's 8192-wide expander ~6x faster (0.17 s vs 1.0 s)
    optimizer = torch.optim.AdamW(param_groups(model, recipe), lr=recipe.optim.lr_encoder,
                                  betas=tuple(recipe.optim.betas),
                                  fused=device.type in ("cpu", "cuda"))
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    start_step = 0
    if ckpt is not None:
        start_step = _resume_step(ckpt, resume_ckpt)
        load_matching_weights(model, ckpt["model"], resume_ckpt, recipe.model.encoder.arch)
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(resume_ckpt, f"cannot resume: its optimizer state does not fit ({e})") from None
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if start_step >= plan.total_steps:
            return _already_finished(run_dir, start_step, plan.total_steps, main)
    step_module: nn.Module = PretrainStep(model, recipe.loss)
    if distributed:
        step_module = DDP(step_module, device_ids=[device.index] if device.type == "cuda" else None,
                          find_unused_parameters=True)
    if recipe.train.compile:
        step_module = torch.compile(step_module)

    seed = recipe.train.seed
    nw = recipe.data.num_workers

    def loader(ds, local_batch: int, salt: int):
        sampler = StepBatchSampler(len(ds), local_batch, seed=seed * 7919 + salt, rank=rank,
                                   world_size=world, start_step=start_step, total_steps=plan.total_steps)
        it = iter(DataLoader(KeyedDataset(ds, seed * 104729 + salt), batch_sampler=sampler,
                             num_workers=nw, persistent_workers=False,
                             worker_init_fn=_worker_ignores_termination if nw else None,
                             pin_memory=device.type == "cuda", prefetch_factor=4 if nw else None))
        _LIVE_LOADERS.append(it)
        return it

    with _forking_workers():
        flow_iter = loader(flow_ds, flow_local, 1) if flow_ds is not None else None
        image_iter = loader(image_ds, image_local, 2) if use_content else None
    # model-side randomness (VC sampling, drop path) per rank; set *after* the DataLoader
    # iterators exist, since creating one draws from the global RNG
    torch.manual_seed(recipe.train.seed + 1000 * rank)
    random.seed(recipe.train.seed + 1000 * rank)
    if ckpt is not None and ckpt.get("rng"):
        # each rank its own saved generators (CPU torch, CUDA, Python); a rank the checkpoint
        # has none for (more processes than when it was saved) keeps the fresh seeds above
        states = ckpt["rng"]
        try:
            saved = len(states)
            if rank < saved:
                _set_rng_state(states[rank], device)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
            raise UserError(resume_ckpt, "cannot resume exactly: its random-number state is "
                            f"malformed ({type(e).__name__}: {e})") from None
        if main and saved != world:
            print(f"resume: the checkpoint holds the random-number state of {saved} "
                  f"process(es), this run has {world}: the data order is the same, per-process "
                  "random draws (drop path, VC samples) differ from an uninterrupted run",
                  file=sys.stderr)

    logger = _RunLogger(run_dir, recipe, main, start_step, resume=ckpt is not None)
    if main:
        logger.info(f"run directory: {run_dir}  |  device {device}  |  {world} process(es)  |  "
                    f"{plan.total_steps} steps (flow from step {plan.flow_start_step}"
                    f"{_stage_note(plan, recipe.loss)})")

    if main and synced_bn:
        logger.info(f"train.sync_bn: the expander's {synced_bn} BatchNorm layers are "
                    f"synchronised across the {world} processes (SyncBatchNorm)")

    def save(step: int, periodic: bool) -> None:
        rng = du.gather_objects(_rng_state(device))  # every rank's own generators, rank order
        if not main:
            return
        state = {
            "recipe": to_dict(recipe),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "step": step,
            "rng": rng,
            "world_size": world,
            "skipped_steps": skipped_total,
        }
        ckdir = run_dir / "checkpoints"
        # last.pt first, so that it is always the newest complete checkpoint
        save_checkpoint(ckdir / "last.pt", state)
        if periodic:
            _keep_copy(ckdir / "last.pt", ckdir / f"step_{step:07d}.pt", state)
            olds = periodic_checkpoints(ckdir)
            for old in olds[: max(0, len(olds) - recipe.train.keep_checkpoints)]:
                old.unlink(missing_ok=True)

    stat_buffers = list(model.buffers())
    t0 = time.time()
    consecutive_bad = 0
    skipped_total = ckpt.get("skipped_steps", 0) if ckpt is not None else 0
    skipped_total = skipped_total if isinstance(skipped_total, int) else 0
    last_log_t, last_log_step = time.time(), start_step
    terms_f: dict[str, float] = {}
    eval_pairs = None  # held-out pairs, rendered at the first evaluation and reused
    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    level_params = {k: [p for p in v if p.requires_grad]
                    for k, v in model.encoder.level_parameters().items()}
    grad_norms: dict[str, float] = {}  # the latest per-objective encoder gradient norms
    level_norms: dict[str, dict[str, float]] = {}  # the same per encoder level
    exit_code = 0
    with _Signals() as sigs, logger.progress(plan.total_steps, start_step, show_progress and main) as bar:
        step = start_step
        while step < plan.total_steps:
            batch: dict[str, torch.Tensor] = {}
            flow_on = step >= plan.flow_start_step
            if flow_iter is not None:
                fb = next(flow_iter)  # consumed every step so the data order never depends on flow_on
                if flow_on:
                    batch["image1"] = fb["image1"].to(device, non_blocking=True)
                    batch["image2"] = fb["image2"].to(device, non_blocking=True)
            if image_iter is not None:
                v1, v2 = next(image_iter)
                batch["view1"] = v1.to(device, non_blocking=True)
                batch["view2"] = v2.to(device, non_blocking=True)
            if recipe.train.channels_last:
                batch = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}
            mult = warmup_cosine(step, plan.total_steps, plan.warmup_steps, recipe.optim.final_lr_ratio)
            for g in optimizer.param_groups:
                g["lr"] = g["base_lr"] * mult
            optimizer.zero_grad(set_to_none=True)
            if not batch:  # flow not started and no content branch: nothing to learn yet
                step += 1
                continue
            # the forward pass updates buffers (BatchNorm running statistics): keep a copy so a
            # skipped step leaves the model exactly as it was (no NaN statistics either)
            saved_buffers = [b.detach().clone() for b in stat_buffers]
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                loss, terms = step_module(batch, flow_on, plan.stage(step))
            if step in recipe.train.inject_nan_at:
                loss = loss * float("nan")
            loss_ok = bool(torch.isfinite(loss.detach()).all().item())
            grad_ok = True
            bad = du.any_true(not loss_ok, device)
            scaled = not bad  # the scaler has seen this step (update() only after scale())
            grad_norm = torch.zeros(())
            diag = recipe.train.grad_norms_every
            if not bad and diag and (step + 1) % diag == 0:
                grad_norms, level_norms = encoder_gradient_norms(
                    objective_parts(terms, recipe.loss), encoder_params, level_params)
            if not bad:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                grad_norm = _clip_per_part(optimizer, recipe.optim.grad_clip)
                grad_ok = bool(torch.isfinite(grad_norm).item())
                bad = du.any_true(not grad_ok, device)
            terms_f = {k: _to_float(v) for k, v in terms.items()}
            if bad:
                consecutive_bad += 1
                skipped_total += 1
                optimizer.zero_grad(set_to_none=True)
                with torch.no_grad():
                    for buf, saved in zip(stat_buffers, saved_buffers, strict=True):
                        buf.copy_(saved)
                if scaler.is_enabled() and scaled:
                    scaler.update()  # lowers the fp16 loss scale after an overflow
                culprits = [k for k, v in terms_f.items() if not math.isfinite(v)]
                if not culprits:  # every term finite: the total, the gradient, or another rank
                    culprits = ["loss"] if not loss_ok else ["gradient"] if not grad_ok else ["other rank"]
                # logged as step + 1, like the metrics record of the same iteration
                logger.event(step + 1, "nonfinite_skip", {"terms": terms_f, "culprits": culprits,
                                                          "consecutive": consecutive_bad})
                if consecutive_bad >= recipe.train.max_nonfinite_steps:
                    last_pt = run_dir / "checkpoints" / "last.pt"
                    kept = (f"the last good checkpoint is {last_pt}" if last_pt.is_file()
                            else "no checkpoint had been written yet")
                    raise RunFailed(
                        f"{consecutive_bad} consecutive steps had a non-finite loss or gradient "
                        f"(train.max_nonfinite_steps; last at step {step + 1}, terms "
                        f"{', '.join(culprits)}); stopped, {kept}")
            else:
                consecutive_bad = 0
                scaler.step(optimizer)
                scaler.update()
            step += 1
            if main:
                bar.advance(terms_f)
            if step % recipe.train.log_every == 0 or step == plan.total_steps:
                now = time.time()
                dt = max(now - last_log_t, 1e-9)
                nsteps = step - last_log_step
                record = {"step": step, "epoch": step / plan.steps_per_epoch, **terms_f,
                          "grad_norm": _to_float(grad_norm),
                          "lr": {g["name"]: g["lr"] for g in optimizer.param_groups},
                          "steps_per_s": nsteps / dt,
                          "pairs_per_s": nsteps * recipe.data.flow_batch_size / dt if flow_on else 0.0,
                          "images_per_s": nsteps * recipe.data.image_batch_size / dt if use_content else 0.0,
                          "skipped_steps": skipped_total, "skipped_samples": data_stats.skipped(),
                          "time": now - t0}
                if grad_norms:  # measured at this step or since the previous record
                    record["encoder_grad_norm"] = grad_norms
                    record["encoder_grad_norm_by_level"] = level_norms
                    grad_norms, level_norms = {}, {}
                logger.log(record)
                last_log_t, last_log_step = now, step
            every = recipe.train.eval_every
            if main and flow_on and every and step % every == 0 and step < plan.total_steps:
                t_eval = time.time()
                if eval_pairs is None:
                    eval_pairs = held_out_pairs(recipe)
                logger.eval_record(step, held_out_figures(model, recipe, device, eval_pairs),
                                   eval_set_epes(model, eval_sets, device))
                last_log_t += time.time() - t_eval  # evaluation time is not training throughput
            signal_code = du.max_int(sigs.received, device) if distributed else sigs.received
            # no periodic checkpoint inside a run of non-finite steps: if the run then fails,
            # last.pt is still the last good one
            periodic = step % recipe.train.checkpoint_every == 0 and consecutive_bad == 0
            if periodic or step == plan.total_steps or signal_code:
                save(step, periodic=periodic)
            if signal_code:
                exit_code = signal_code
                if main:
                    logger.info(f"interrupted: checkpoint saved at step {step}; resume with "
                                f"mcjepa pretrain --resume {run_dir}")
                break
    wall = time.time() - t0
    sync = _ranks_in_sync(model, device) if distributed else None
    logger.close()
    if exit_code:
        raise _Interrupted(exit_code)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "steps": plan.total_steps,
                               "wall_time_s": wall, "skipped_steps": skipped_total,
                               "skipped_samples": data_stats.skipped()}
    if sync is not None:
        summary["world_size"] = world
        summary["max_param_diff_across_ranks"] = sync
    if main:
        summary.update(end_of_run_report(model, recipe, device, terms_f, eval_pairs))
        if eval_sets:
            summary["eval_sets"] = eval_set_epes(model, eval_sets, device)
        summary["wall_time_s"] = wall
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        text = _summary_markdown(recipe, summary)
        if recipe.train.report_plots:
            text += _report_plots(run_dir)
        atomic_write_text(run_dir / "summary.md", text)
    return summary


def _resume_step(ckpt: dict[str, Any], path: Path | None) -> int:
    """The checkpoint's step, checked: a whole number >= 0 (a tensor holding one is fine)."""
    value = ckpt["step"]
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(path or "checkpoint", f"cannot resume: its step is {value!r:.60}, "
                        "expected a whole number >= 0")
    return value


def _already_finished(run_dir: Path, step: int, total: int, main: bool) -> dict[str, Any]:
    """``--resume`` of a run that has done all its steps: touch nothing, return its summary."""
    summary: dict[str, Any] = {"run_dir": str(run_dir), "steps": total}
    try:
        saved = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        if isinstance(saved, dict):
            summary = saved
    except (OSError, ValueError):
        pass
    if main:
        print(f"{run_dir}: the run already finished (step {step} of {total}); nothing to resume, "
              "no file changed", file=sys.stderr)
    return summary


def _ranks_in_sync(model: nn.Module, device: torch.device) -> float:
    """Largest absolute difference of any parameter between rank 0 and the other ranks."""
    flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()]).to(device)
    gathered = du.gather_tensors(flat)
    return max(float((g - gathered[0]).abs().max()) for g in gathered)


class _Interrupted(SystemExit):
    """Raised after a clean stop on SIGINT / SIGTERM (exit 130 / 143)."""


def held_out_pairs(recipe: Recipe) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The held-out synthetic pairs as CPU batches of 8: (image1, image2, flow).

    Rendered once per run and reused by every mid-run evaluation and the end-of-run report.
    """
    from mcjepa_cli.data.synthetic import SyntheticFlowPairs

    h, w = recipe.train.eval_size
    ds = SyntheticFlowPairs(h, w, recipe.train.eval_pairs, seed=recipe.train.seed, split="val",
                            cfg=recipe.data.synthetic)
    batches = []
    for i in range(0, len(ds), 8):
        items = [ds[j] for j in range(i, min(len(ds), i + 8))]
        batches.append(tuple(torch.stack([it[k] for it in items]) for k in ("image1", "image2", "flow")))
    return batches


@torch.inference_mode()
def held_out_epe(model: MCJEPA, recipe: Recipe, device: torch.device,
                 pairs: list[tuple[torch.Tensor, ...]] | None = None) -> tuple[float, float]:
    """EPE of the model and of zero flow on held-out synthetic pairs (pooled over pixels).

    ``pairs``: the output of :func:`held_out_pairs` (rendered here when not given).
    """
    if pairs is None:
        pairs = held_out_pairs(recipe)
    was_training = model.training
    model.eval()
    err_sum = zero_sum = 0.0
    count = 0
    for im1, im2, gt in pairs:
        gt = gt.to(device)
        pred = model.estimate_flow(im1.to(device), im2.to(device)).float()
        err_sum += float((pred - gt).norm(dim=1).sum())
        zero_sum += float(gt.norm(dim=1).sum())
        count += gt[:, 0].numel()
    model.train(was_training)
    return err_sum / count, zero_sum / count


@torch.inference_mode()
def embedding_std(model: MCJEPA, recipe: Recipe, device: torch.device, n: int = 64) -> float | None:
    """Mean per-dimension std of content embeddings over held-out images (< 0.1 = collapsed)."""
    if model.expander is None:
        return None
    from mcjepa_cli.data.synthetic import SyntheticImages

    s = recipe.data.image_size
    ds = SyntheticImages(s, s, n, seed=recipe.train.seed, split="val", cfg=recipe.data.synthetic)
    imgs = torch.stack([ds[i] for i in range(len(ds))]).to(device)
    was_training = model.training
    model.eval()
    z = model.embed(imgs).float()
    model.train(was_training)
    return float(z.std(dim=0).mean())


def held_out_figures(model: MCJEPA, recipe: Recipe, device: torch.device,
                     pairs: list[tuple[torch.Tensor, ...]] | None = None) -> dict[str, float]:
    """``heldout_epe``, ``zero_flow_epe`` and their ratio (below 1: flow was learned)."""
    epe, zero = held_out_epe(model, recipe, device, pairs)
    return {"heldout_epe": epe, "zero_flow_epe": zero, "epe_ratio": epe / max(zero, 1e-12)}


def real_eval_sets(recipe: Recipe) -> list[tuple[str, Any]]:
    """``train.eval_sets`` as (label, flow-eval set) pairs, built (roots and layouts checked)
    before training starts; a label is the dataset name, plus ``/pass`` for Sintel and Things."""
    from mcjepa_cli.data.flow_eval_datasets import build_flow_eval_sets

    out: list[tuple[str, Any]] = []
    for i, spec in enumerate(recipe.train.eval_sets):
        try:
            sets = build_flow_eval_sets(spec.name, spec.root, pass_name=spec.pass_name,
                                        split=spec.split)
        except UserError as e:
            raise UserError(f"train.eval_sets[{i}]", str(e)) from None
        for evalset in sets:
            label = evalset.name + (f"/{evalset.pass_name}" if evalset.pass_name else "")
            out.append((label, evalset))
    return out


def eval_set_epes(model: MCJEPA, sets: list[tuple[str, Any]], device: torch.device,
                  batch_size: int = 2) -> dict[str, float]:
    """Pooled EPE (px) of the model on each ``train.eval_sets`` set, at the frames' own size,
    with flow-eval's own scoring (``image_stats``: valid pixels, KITTI/Sintel conventions)."""
    if not sets:
        return {}
    from mcjepa_cli.eval.flow_eval import predict_flows
    from mcjepa_cli.eval.flow_metrics import FlowMetricAccumulator, image_stats

    was_training = model.training
    model.eval()
    out = {}
    try:
        with torch.inference_mode():
            for label, evalset in sets:
                acc = FlowMetricAccumulator()
                for index, flow in predict_flows(model, evalset, device, batch_size):
                    target = evalset.load_target(index)
                    acc.add(image_stats(flow, target.flow, target.valid, target.occlusion))
                out[label] = float(acc.summary("pooled")["epe"])
    finally:
        model.train(was_training)
    return out


def end_of_run_report(model: MCJEPA, recipe: Recipe, device: torch.device,
                      last_terms: dict[str, float],
                      pairs: list[tuple[torch.Tensor, ...]] | None = None) -> dict[str, Any]:
    std = embedding_std(model, recipe, device)
    return {**held_out_figures(model, recipe, device, pairs), "embedding_std": std,
            "collapsed": (std is not None and std < 0.1), "last_terms": last_terms}


def _summary_markdown(recipe: Recipe, s: dict[str, Any]) -> str:
    lines = [f"# Run summary: {recipe.name}", "",
             f"- steps: {s['steps']}", f"- wall time: {s['wall_time_s']:.1f} s",
             f"- held-out synthetic EPE: {s['heldout_epe']:.3f} px (zero flow: {s['zero_flow_epe']:.3f} px, "
             f"ratio {s['epe_ratio']:.3f})"]
    if s.get("embedding_std") is not None:
        lines.append(f"- content embedding std: {s['embedding_std']:.3f} "
                     f"({'COLLAPSED' if s['collapsed'] else 'no collapse'}; collapse = < 0.1)")
    for label, epe in (s.get("eval_sets") or {}).items():
        lines.append(f"- EPE on {label} (train.eval_sets, pooled): {epe:.3f} px")
    lines.append(f"- skipped steps (non-finite): {s['skipped_steps']}, skipped samples: {s['skipped_samples']}")
    return "\n".join(lines) + "\n"


def _report_plots(run_dir: Path) -> str:
    """Write ``<run>/report/`` (``mcjepa report``) and return summary.md's lines for it; a
    failure to plot is reported and never fails the finished run."""
    try:
        from mcjepa_cli.viz.report import write_report

        report, written = write_report(run_dir)
    except (ImportError, OSError, ValueError, RuntimeError, UserError) as e:
        print(f"warning: no plots in {run_dir / 'report'} ({type(e).__name__}: {e})",
              file=sys.stderr)
        return ""
    lines = ["", "## Plots", "", f"The full report: [{report.relative_to(run_dir)}]"
             f"({report.relative_to(run_dir)}) (`mcjepa report {run_dir}` redraws it).", ""]
    lines += [f"![{p.stem}]({p.relative_to(run_dir)})" for p in written]
    return "\n".join(lines) + "\n"


def _metrics_up_to(path: Path, step: int) -> tuple[list[str], int]:
    """The records of ``metrics.jsonl`` up to ``step`` (those after it were written after the
    resumed checkpoint, before a kill), and how many lines were not records (not UTF-8, not a
    JSON object, no whole-number step) besides a final line cut short by a kill."""
    kept, bad = [], 0
    for last, text, rec in step_records(path):
        if rec is None:
            bad += not last  # the last line may be half-written by a kill: not "bad"
        elif rec["step"] <= step:
            kept.append(text)
    return kept, bad


class _RunLogger:
    """Rank-aware run outputs: recipe.yaml, metrics.jsonl, TensorBoard, console, progress bar."""

    def __init__(self, run_dir: Path, recipe: Recipe, main: bool, start_step: int, resume: bool) -> None:
        self.main = main
        self.run_dir = run_dir
        self.tb = None
        self.console = None
        if not main:
            return
        from rich.console import Console

        self.console = Console(stderr=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "recipe.yaml", dump_recipe(recipe))
        self.metrics_path = run_dir / "metrics.jsonl"
        if resume and self.metrics_path.exists():
            # drop records past the resumed checkpoint (written after it, before a kill)
            kept, bad = _metrics_up_to(self.metrics_path, start_step)
            if bad:
                print(f"{self.metrics_path}: skipped {bad} malformed line(s) (not JSON records "
                      "with a step); the other records are kept", file=sys.stderr)
            atomic_write_text(self.metrics_path, "".join(k + "\n" for k in kept))
        elif self.metrics_path.exists():
            self.metrics_path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step or None)
        except ImportError:  # TensorBoard is optional
            self.tb = None

    def info(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)

    def _append(self, record: dict[str, Any]) -> None:
        try:
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
        except OSError as e:  # disk full, file too large: name the file (one line, exit 2)
            if e.filename is None:
                raise OSError(e.errno, e.strerror, str(self.metrics_path)) from None
            raise

    def log(self, record: dict[str, Any]) -> None:
        if not self.main:
            return
        self._append(record)
        if self.tb is not None:
            step = record["step"]
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"train/{k}", v, step)
            for k, v in record["lr"].items():
                self.tb.add_scalar(f"lr/{k}", v, step)
            for k, v in record.get("encoder_grad_norm", {}).items():
                self.tb.add_scalar(f"encoder_grad_norm/{k}", v, step)
            for level, norms in record.get("encoder_grad_norm_by_level", {}).items():
                for k, v in norms.items():
                    self.tb.add_scalar(f"encoder_grad_norm_{level}/{k}", v, step)

    def eval_record(self, step: int, payload: dict[str, float],
                    sets: dict[str, float] | None = None) -> None:
        """A mid-run evaluation (held-out synthetic pairs, and ``train.eval_sets`` EPEs):
        metrics.jsonl record, TensorBoard eval/*, console line."""
        if not self.main:
            return
        record: dict[str, Any] = {"step": step, "event": "eval", **payload}
        if sets:
            record["eval_sets_epe"] = sets
        self._append(record)
        if self.tb is not None:
            for k, v in payload.items():
                self.tb.add_scalar(f"eval/{k}", v, step)
            for label, v in (sets or {}).items():
                self.tb.add_scalar(f"eval_sets_epe/{label}", v, step)
        extra = "".join(f" | {label} {v:.3f}" for label, v in (sets or {}).items())
        self.info(f"step {step}: held-out EPE {payload['heldout_epe']:.3f} px "
                  f"(zero flow {payload['zero_flow_epe']:.3f}, ratio {payload['epe_ratio']:.3f})"
                  f"{extra}")

    def event(self, step: int, kind: str, payload: dict[str, Any]) -> None:
        if not self.main:
            return
        self._append({"step": step, "event": kind, **payload})
        self.info(f"[yellow]step {step}: {kind} {payload.get('culprits', '')}[/yellow]")

    def progress(self, total: int, start: int, enabled: bool) -> _Progress:
        return _Progress(total, start, enabled, self.console)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class _Progress:
    """A rich progress bar with ETA and the live loss terms (a no-op when disabled)."""

    SHOWN = ("loss", "photometric", "smoothness", "feature_regression", "vicreg", "embedding_std")

    def __init__(self, total: int, start: int, enabled: bool, console: Any) -> None:
        self.enabled = enabled and console is not None
        self.total, self.start = total, start
        self.console = console

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.table import Column

            # the step count, times and ETA keep their width; the bar takes what is left up to
            # 30 columns, and the loss terms only what remains after that (cut with an
            # ellipsis), so at 80 columns nothing that matters is crowded out
            self.prog = Progress(
                TextColumn("pretrain"), BarColumn(bar_width=None, table_column=Column(
                    min_width=10, max_width=30, ratio=1)),
                MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[terms]}", table_column=Column(
                    no_wrap=True, overflow="ellipsis", min_width=0, ratio=2)),
                console=self.console, transient=False, expand=True)
            self.prog.__enter__()
            self.task = self.prog.add_task("pretrain", total=self.total, completed=self.start, terms="")
        return self

    def advance(self, terms: dict[str, float]) -> None:
        if not self.enabled:
            return
        text = " ".join(f"{k}={terms[k]:.3g}" for k in self.SHOWN if k in terms)
        self.prog.update(self.task, advance=1, terms=text)

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.prog.__exit__(*exc)


def run_env_summary() -> dict[str, Any]:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "pid": os.getpid()}
