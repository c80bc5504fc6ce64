"""Smoke test of the benchmark suite (``python -m benchmarks --quick``): it runs end to end,
writes a well-formed JSON document, and compares implementations that agree.

No timing is asserted: figures on a shared machine are noise at these sizes.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import run as bench_run  # noqa: E402
from benchmarks.common import SCHEMA, BenchContext, Case, ratio, run_probe, time_cases  # noqa: E402

FIGURES = {"flow_inference", "pretrain_step", "cost_volume", "data", "memory", "video"}


def _unfold_reference(f1: torch.Tensor, f2: torch.Tensor, r: int) -> torch.Tensor:
    """Cost volume by an explicit loop over shifts on a zero-padded copy (independent of ours)."""
    b, c, h, w = f1.shape
    d = 2 * r + 1
    f2p = F.pad(f2, (r, r, r, r))
    out = torch.empty(b, d * d, h, w, dtype=f1.dtype)
    for dy in range(d):
        for dx in range(d):
            out[:, dy * d + dx] = (f1 * f2p[:, :, dy : dy + h, dx : dx + w]).sum(1) / c
    return out


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    torch_threads = torch.get_num_threads()
    try:
        # one thread: on a shared 2-core machine OpenMP's spin-waits make tiny ops ~3x slower
        code = bench_run.main(["--quick", "--device", "cpu", "--threads", "1", "--output", str(out)])
    finally:
        torch.set_num_threads(torch_threads)
    assert code == 0, "a figure failed in --quick mode"
    return json.loads(out.read_text()), out


def test_quick_suite_writes_complete_json(quick_results):
    doc, path = quick_results
    assert doc["schema"] == SCHEMA
    assert not list(path.parent.glob(f".{path.name}.tmp-*")), "temporary file left behind"
    env = doc["environment"]
    for key in ("host", "cpu", "cpu_count", "torch_threads", "device", "load_average", "load_average_end"):
        assert key in env
    assert env["torch_threads"] == 1
    assert env["versions"]["torch"] == torch.__version__
    assert env["versions"]["torchvision"] and env["versions"]["timm"]
    assert env["git"] is None or len(env["git"]["commit"]) >= 7
    assert doc["options"]["quick"] is True and doc["options"]["device"] == "cpu"
    assert doc["wall_s"] > 0
    assert set(doc["figures"]) == FIGURES
    for name, fig in doc["figures"].items():
        assert "error" not in fig, fig.get("error")
        assert fig["name"] == name and fig["title"] and fig["wall_s"] >= 0
        assert fig["load_average"]["start"] is None or len(fig["load_average"]["start"]) == 3
        for r in fig["ratios"]:
            assert r["name"] and math.isfinite(r["value"]) and r["value"] >= 0, r
            if r.get("target") is not None:
                assert isinstance(r["met"], bool)
    # every figure with a target in the issue reports it
    targets = {(n, r["target"]) for n, f in doc["figures"].items() for r in f["ratios"] if r.get("target")}
    assert targets == {("flow_inference", 1.0), ("flow_inference", 0.25), ("pretrain_step", 1.5),
                       ("cost_volume", 1.0), ("cost_volume", 0.25), ("data", 3.0), ("video", 0.6)}


def test_quick_figures_hold_their_measurements(quick_results):
    figs = quick_results[0]["figures"]
    inf = figs["flow_inference"]
    assert [e["key"] for e in inf["entries"]] == ["ours", "raft_small", "raft_large"]
    assert all(e["median_s"] > 0 and len(e["times_s"]) == e["repeats"] == 1 for e in inf["entries"])
    step = figs["pretrain_step"]["rows"][0]
    assert step["ours"]["median_s"] > 0 and step["bare"]["median_s"] > 0
    assert step["ratio"]["ratio_of_medians"] == pytest.approx(
        step["ours"]["median_s"] / step["bare"]["median_s"])
    for side in ("ours", "bare"):
        mem = step["memory"][side]
        assert mem["kind"] == "cpu_peak_rss" and mem["peak_mb"] >= mem["increase_mb"] >= 0
    cv = figs["cost_volume"]
    assert [r["stride"] for r in cv["rows"]] == [32, 16, 8, 4]  # quick model's flow strides
    for row in cv["rows"]:
        assert max(row["max_abs_error"].values()) < 1e-4  # every implementation agrees
    assert set(cv["rows"][-1]["memory"]) == {"ours", "shift", "naive"}
    data = figs["data"]
    assert {e["key"] for e in data["entries"]} == {"world_pairs", "world_images", "pipeline_pairs",
                                                   "pipeline_images", "imagefolder_images"}
    assert all(e["samples_per_s"] > 0 for e in data["entries"])
    assert figs["memory"]["rows"][0]["peak_mb"] > 0
    video = figs["video"]
    assert video["setup"]["flows"] == video["setup"]["frames"] - 1 >= 1
    assert [e["key"] for e in video["entries"]] == ["reuse", "scratch", "steady_reuse", "steady_scratch"]
    steady = {e["key"]: e["median_s"] for e in video["entries"]}
    assert video["ratios"][0]["ratio_of_medians"] == pytest.approx(
        steady["steady_reuse"] / steady["steady_scratch"])


def test_help_documents_quick_and_full_modes(capsys):
    with pytest.raises(SystemExit) as e:
        bench_run.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for word in ("--quick", "--full", "full (default", "quick (--quick)", "--threads", "--only"):
        assert word in text
    assert bench_run.build_parser().parse_args(["--full"]).quick is False
    with pytest.raises(SystemExit):
        bench_run.build_parser().parse_args(["--quick", "--full"])


def test_full_mode_uses_the_documented_shapes():
    """What the full run measures (not run here): the sizes docs/benchmarks.md states."""
    from benchmarks import cost_volume, flow_inference, pretrain_step, video

    ctx = BenchContext(device=torch.device("cpu"))
    assert flow_inference.SIZE == (448, 1024) and flow_inference.RAFT == {"raft_small": 12, "raft_large": 32}
    assert cost_volume.level_shapes(ctx) == [(64, 2, 64, 7, 16), (32, 2, 64, 14, 32), (16, 2, 64, 28, 64),
                                             (8, 2, 64, 56, 128), (4, 2, 64, 112, 256)]
    tiny = pretrain_step.shapes(ctx)["mcjepa_convnext_tiny"]
    assert (tiny.pairs, tiny.flow_size, tiny.images, tiny.image_size) == (2, (256, 320), 8, 128)
    assert video.FRAMES == 8


def test_only_selects_figures_and_rejects_unknown_names():
    assert bench_run._figures(["cost_volume,data"]) == ["cost_volume", "data"]
    assert bench_run._figures([]) == sorted(FIGURES, key=bench_run.FIGURES.index)
    with pytest.raises(SystemExit, match="--only nope"):
        bench_run._figures(["nope"])


def test_interleaved_timing_and_ratios():
    ctx = BenchContext(device=torch.device("cpu"), repeats=4, warmup=1)
    calls: list[str] = []
    times, _ = time_cases(ctx, [Case("a", lambda: calls.append("a")), Case("b", lambda: calls.append("b"))])
    # warm-up a, b; then repeats alternate the order: a b, b a, a b, b a
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(times["a"]) == len(times["b"]) == 4
    r = ratio([2.0, 4.0, 6.0], [1.0, 1.0, 3.0], target=2.5)
    assert r["ratio_of_medians"] == pytest.approx(4.0 / 1.0)
    assert r["median_of_ratios"] == pytest.approx(2.0)  # ratios 2, 4, 2
    assert r["met"] is True


def test_tiled_cost_volume_matches_reference_across_tiles():
    """Widths spanning several 16-column tiles, uneven last tile, radius 4 and 9."""
    from mcjepa_cli.models.layers import cost_volume

    torch.manual_seed(0)
    for b, c, h, w, r in [(2, 3, 5, 37, 4), (1, 2, 4, 70, 9), (1, 4, 3, 16, 4)]:
        f1 = torch.randn(b, c, h, w, dtype=torch.float64, requires_grad=True)
        f2 = torch.randn(b, c, h, w, dtype=torch.float64, requires_grad=True)
        out = cost_volume(f1, f2, r)
        assert torch.allclose(out, _unfold_reference(f1, f2, r), atol=1e-12)
        g = torch.randn_like(out)
        ga = torch.autograd.grad((out * g).sum(), (f1, f2))
        gb = torch.autograd.grad((_unfold_reference(f1, f2, r) * g).sum(), (f1, f2))
        for x, y in zip(ga, gb):
            assert torch.allclose(x, y, atol=1e-12)


def test_memory_probe_runs_in_a_fresh_process():
    ctx = BenchContext(device=torch.device("cpu"), quick=True, memory="subprocess")
    out = run_probe(ctx, "cost_volume", "cost_volume_memory", {"impl": "naive", "shape": [1, 8, 16, 32]})
    assert out["process"] == "subprocess" and out["impl"] == "naive"
    assert out["peak_memory"]["peak_mb"] > 0
