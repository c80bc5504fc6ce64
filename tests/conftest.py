"""Shared pytest fixtures: the real sample data folder and a tiny trained checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path | None:
    env = os.environ.get("MCJEPA_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ``../shared/data`` (real benchmark samples); skips the test where absent."""
    path = _shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is not present (real sample data); skipped")
    return path


# A tiny variant of the quickstart recipe: seconds per run on 2 CPU cores.
TINY_OVERRIDES = [
    "model.flow_head.decoder_channels=[16,16]",
    "model.flow_head.proj_channels=16",
    "model.expander.dims=[64,64]",
    "data.flow_batch_size=2",
    "data.image_batch_size=4",
    "data.flow_size=[64,64]",
    "data.image_size=32",
    "data.num_workers=0",
    "schedule.total=6",
    "schedule.warmup=2",
    "train.log_every=1",
    "train.checkpoint_every=3",
    "train.report_plots=false",  # tests/test_report.py draws them
    "train.eval_pairs=4",
    "train.eval_size=[64,64]",
    "train.device=cpu",
]


def tiny_args(*extra: str) -> list[str]:
    """``--set`` arguments for the tiny recipe, plus ``extra`` overrides."""
    out: list[str] = []
    for o in [*TINY_OVERRIDES, *extra]:
        out += ["--set", o]
    return out


@pytest.fixture(scope="session")
def quickstart_checkpoint(tmp_path_factory) -> Path:
    """A run directory trained for a few seconds with the quickstart architecture.

    Returns the run directory (``<dir>/checkpoints/last.pt`` exists); every command that takes
    ``--checkpoint`` accepts it.
    """
    from mcjepa_cli.config import load_recipe
    from mcjepa_cli.engine.trainer import pretrain

    run = tmp_path_factory.mktemp("quickstart_run") / "run"
    overrides = [o for o in TINY_OVERRIDES if not o.startswith(("schedule.total", "data.flow_size"))]
    recipe = load_recipe("quickstart", [*overrides, "schedule.total=12", "data.flow_size=[64,96]",
                                        "train.checkpoint_every=100"])
    pretrain(recipe, output=str(run), show_progress=False)
    assert (run / "checkpoints" / "last.pt").is_file()
    return run
