"""Tests for ``mcjepa visualize``: panels against naive re-implementations, the writers, and the
command on real clips, images, frame folders and ground-truth flow files."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from mcjepa_cli.io.images import voc_palette
from mcjepa_cli.main import app
from mcjepa_cli.models.mcjepa import PreparedFrame, pad_to_multiple
from mcjepa_cli.viz import panels as P
from mcjepa_cli.viz.run import FeaturePCA, visualize
from mcjepa_cli.viz.writer import GRID_GAP, grid_indices, open_frame_writer

runner = CliRunner()


# ----------------------------------------------------------------------------- helpers


def _naive_middlebury(u: float, v: float, max_flow: float) -> tuple[int, int, int]:
    """Baker et al.'s flow colour (flowToColor / computeColor) for one vector, rim-clipped."""
    ry, yg, gc, cb, bm, mr = 15, 6, 4, 11, 13, 6
    wheel = []
    for i in range(ry):
        wheel.append((255, math.floor(255 * i / ry), 0))
    for i in range(yg):
        wheel.append((255 - math.floor(255 * i / yg), 255, 0))
    for i in range(gc):
        wheel.append((0, 255, math.floor(255 * i / gc)))
    for i in range(cb):
        wheel.append((0, 255 - math.floor(255 * i / cb), 255))
    for i in range(bm):
        wheel.append((math.floor(255 * i / bm), 0, 255))
    for i in range(mr):
        wheel.append((255, 0, 255 - math.floor(255 * i / mr)))
    ncols = len(wheel)  # 55
    u, v = u / max_flow, v / max_flow
    rad = math.hypot(u, v)
    if rad > 1.0:  # our panels clip at the rim instead of darkening
        u, v, rad = u / rad, v / rad, 1.0
    a = math.atan2(-v, -u) / math.pi
    fk = (a + 1.0) / 2.0 * (ncols - 1)
    k0 = math.floor(fk)
    k1 = 0 if k0 + 1 == ncols else k0 + 1
    f = fk - k0
    out = []
    for c in range(3):
        col = (1 - f) * wheel[k0][c] / 255.0 + f * wheel[k1][c] / 255.0
        col = 1 - rad * (1 - col)
        out.append(math.floor(255 * col))
    return tuple(out)


def _naive_flow_image(
    flow: np.ndarray, max_flow: float, valid: np.ndarray | None = None
) -> np.ndarray:
    """(H, W, 2) flow -> (H, W, 3) uint8 via the per-pixel loop above; unknown -> black."""
    h, w = flow.shape[:2]
    out = np.zeros((h, w, 3), np.uint8)
    for y in range(h):
        for x in range(w):
            if valid is not None and not valid[y, x]:
                continue
            out[y, x] = _naive_middlebury(float(flow[y, x, 0]), float(flow[y, x, 1]), max_flow)
    return out


class ShiftModel(torch.nn.Module):
    """A stand-in model: frame t+d is frame t moved by ``d * v`` px; a cell's features are its
    own (centred) pixels, so a shift by a whole cell moves the features exactly.

    It counts its calls, so the tests can check that every frame's features are computed once.
    """

    feature_strides = (2, 4, 8, 16, 32, 64)

    def __init__(self, v: tuple[float, float] = (3.0, 0.0)) -> None:
        super().__init__()
        self.v = v
        self.prepared = 0
        self.flow_calls = 0

    def prepare_frame(self, img: torch.Tensor) -> PreparedFrame:
        h, w = img.shape[-2:]
        x, pad = pad_to_multiple(img, 64)
        pyramid = [
            F.pixel_unshuffle(x - 0.5, s) for s in self.feature_strides
        ]  # (1, 3s^2, H/s, W/s)
        p = PreparedFrame(pyramid, (h, w), tuple(x.shape[-2:]), pad)
        p.index = self.prepared  # type: ignore[attr-defined]
        self.prepared += 1
        return p

    def flow_between(self, p1: PreparedFrame, p2: PreparedFrame) -> torch.Tensor:
        self.flow_calls += 1
        d = p2.index - p1.index  # type: ignore[attr-defined]
        h, w = p1.size
        flow = torch.zeros(1, 2, h, w)
        flow[:, 0], flow[:, 1] = self.v[0] * d, self.v[1] * d
        return flow


def _shifted_clip(folder: Path, n: int = 4, h: int = 24, w: int = 40, dx: int = 3) -> np.ndarray:
    """Frames of one random texture moving ``dx`` px right per frame: I_{t+1}(x + dx) = I_t(x)."""
    rng = np.random.default_rng(0)
    tex = (rng.random((h, w + dx * n + 8, 3)) * 255).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for t in range(n):
        x0 = dx * n - dx * t
        frame = np.ascontiguousarray(tex[:, x0 : x0 + w])
        Image.fromarray(frame).save(folder / f"{t:05d}.png")
        frames.append(frame)
    return np.stack(frames)


def _panel(image: np.ndarray, index: int, panel_hw: tuple[int, int], row: int = 0) -> np.ndarray:
    """Cut panel ``index`` of grid row ``row`` out of a composed frame (caption strip skipped)."""
    h, w = panel_hw
    strip = P.caption_height(h)
    y0 = row * (strip + h + GRID_GAP) + strip
    x0 = index * (w + 2)
    return image[y0 : y0 + h, x0 : x0 + w]


def _one_error_line(result) -> None:
    assert result.exit_code == 2, result.output
    text = result.output  # stdout and stderr as a terminal shows them
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert sum(ln.startswith("error:") for ln in lines) == 1, text
    assert "Traceback" not in text


@pytest.fixture(scope="module")
def viz_checkpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The suite's quickstart checkpoint (a tiny trained model); where the suite has none, an
    untrained quickstart-architecture checkpoint (these tests check files, not flow quality)."""
    try:
        return request.getfixturevalue("quickstart_checkpoint")
    except pytest.FixtureLookupError:
        from mcjepa_cli.config import load_recipe, to_dict
        from mcjepa_cli.engine.checkpoint import save_checkpoint
        from mcjepa_cli.models import build_model

        recipe = load_recipe("quickstart")
        torch.manual_seed(0)
        model = build_model(recipe.model)
        path = tmp_path_factory.mktemp("viz_ckpt") / "last.pt"
        save_checkpoint(path, {"recipe": to_dict(recipe), "model": model.state_dict(), "step": 0})
        return path


# ----------------------------------------------------------------------------- panels


def test_flow_colours_match_naive_middlebury_at_a_fixed_scale() -> None:
    gen = torch.Generator().manual_seed(1)
    flow = torch.randn(2, 9, 11, generator=gen) * 4.0  # some vectors beyond the rim
    valid = torch.rand(9, 11, generator=gen) > 0.2
    flow[0, 0, 0] = float("nan")  # non-finite -> unknown as well
    got = P.flow_to_rgb(flow, 5.0, valid).permute(1, 2, 0).numpy()
    known = valid.numpy() & np.isfinite(flow.numpy()).all(0)
    want = _naive_flow_image(flow.permute(1, 2, 0).numpy(), 5.0, known)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert (got[~known] == 0).all()  # unknown pixels black
    # the scale is fixed: halving the field does not re-normalise it to full saturation
    half = P.flow_to_rgb(flow * 0.5, 5.0, valid).permute(1, 2, 0).numpy()
    want_half = _naive_flow_image(flow.permute(1, 2, 0).numpy() * 0.5, 5.0, known)
    assert np.abs(half.astype(int) - want_half.astype(int)).max() <= 1


def test_wheel_legend_shows_each_direction_in_its_colour() -> None:
    r = 10
    rgb, disc = P.flow_wheel(r)
    assert disc.sum() > 0.7 * math.pi * r * r
    for dx, dy in [(r, 0), (0, r), (-r, 0), (0, -r), (7, -7), (0, 0)]:
        want = _naive_middlebury(dx / r, dy / r, 1.0)
        got = tuple(int(c) for c in rgb[:, r + dy, r + dx])
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= 1, (dx, dy, got, want)
    panel = torch.full((3, 100, 120), 255, dtype=torch.uint8)
    with_legend = P.add_flow_legend(panel)
    changed = (with_legend != panel).any(0).nonzero()
    assert changed[:, 0].min() > 50 and changed[:, 1].min() > 60  # bottom-right corner only


def test_pca_colours_are_stable_over_the_clip_and_follow_the_first_component() -> None:
    rng = np.random.default_rng(0)
    direction = rng.normal(size=16)
    direction /= np.linalg.norm(direction)
    feats = []
    for _ in range(3):
        a = rng.normal(size=(1, 6, 7)) * 5.0  # strong first component
        noise = rng.normal(size=(16, 6, 7)) * 0.1
        feats.append(torch.tensor(direction[:, None, None] * a + noise, dtype=torch.float32))
    feats[2][:, 0, 0] = feats[0][:, 3, 4]  # the same vector in two frames
    pca = FeaturePCA().fit(feats)
    cols = [pca.transform(f) for f in feats]
    assert torch.equal(cols[2][:, 0, 0], cols[0][:, 3, 4])
    # channel 0 rises (or falls) with the projection on the top singular vector
    data = np.concatenate([f.flatten(1).T.numpy() for f in feats]).astype(np.float64)
    centred = data - data.mean(0)
    top = np.linalg.svd(centred, full_matrices=False)[2][0]
    proj = centred @ top
    red = np.concatenate([c[0].flatten().numpy() for c in cols])
    inner = (red > 0.01) & (red < 0.99)  # away from the 1%/99% clipping
    assert abs(np.corrcoef(proj[inner], red[inner])[0, 1]) > 0.99


def test_mask_overlay_matches_a_naive_blend() -> None:
    frame = torch.randint(
        0, 256, (3, 6, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    labels = np.zeros((6, 7), np.int64)
    labels[1:5, 2:6] = 1
    labels[2:4, 3:5] = 2
    labels[0, 0] = 255
    palette = np.array([[0, 0, 0], [200, 0, 0], [0, 200, 0]] + [[9, 9, 9]] * 253, np.uint8)
    got = P.mask_overlay(frame, labels, palette, alpha=0.5).numpy()
    f = frame.numpy().astype(float)
    for y in range(6):
        for x in range(7):
            lab = labels[y, x]
            if lab in (0, 255):
                assert (got[:, y, x] == f[:, y, x]).all()
                continue
            nbrs = [
                labels[yy, xx]
                for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1))
                if 0 <= yy < 6 and 0 <= xx < 7
            ]
            edge = any(n != lab for n in nbrs)
            want = palette[lab] if edge else np.round(0.5 * f[:, y, x] + 0.5 * palette[lab])
            assert np.abs(got[:, y, x] - want).max() <= 1, (y, x)


def test_cells_to_pixels_crops_the_padding() -> None:
    cells = torch.arange(12.0).view(1, 3, 4)
    out = P.cells_to_pixels(cells, 4, (2, 2, 1, 3), (8, 12))  # padded 12x16 -> image 8x12
    for y in range(8):
        for x in range(12):
            assert out[0, y, x] == cells[0, (y + 1) // 4, (x + 2) // 4]


# ----------------------------------------------------------------------------- writers


def test_grid_indices_spread_evenly() -> None:
    assert grid_indices(10, 4) == [0, 3, 6, 9]
    assert grid_indices(3, 4) == [0, 1, 2]
    assert grid_indices(1, 4) == [0]


@pytest.mark.parametrize("ext", ["mp4", "gif", "png"])
def test_writers_round_trip(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"clip.{ext}"
    levels = [0, 60, 120, 180, 240]
    with open_frame_writer(path, fps=12, num_frames=5, grid_rows=3) as w:
        for v in levels:
            frame = np.full((33, 47, 3), v, np.uint8)  # odd sides
            w.append(frame)
    assert not list(tmp_path.glob(".clip*"))  # no temporary file left behind
    if ext == "png":
        img = iio.imread(path)
        assert img.shape == (3 * 33 + 2 * GRID_GAP, 47, 3)
        assert [int(img[r * (33 + GRID_GAP) + 5, 5, 0]) for r in range(3)] == [0, 120, 240]
        return
    frames = iio.imread(path, index=None)
    if ext == "mp4":
        assert frames.shape[:3] == (5, 34, 48)  # padded to even sides, never rescaled
        meta = iio.immeta(path, plugin="FFMPEG")
        assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
        assert abs(meta["fps"] - 12) < 1e-6
        assert np.abs(frames[:, :33, :47].mean(axis=(1, 2, 3)) - levels).max() < 4
    else:
        assert frames.shape[:3] == (5, 33, 47)
        assert np.abs(frames[..., :3].mean(axis=(1, 2, 3)) - levels).max() < 2


def test_writer_leaves_nothing_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError), open_frame_writer(path, fps=5, num_frames=3) as w:
        w.append(np.zeros((8, 8, 3), np.uint8))
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ pipeline (fake model)


def test_pipeline_with_a_known_shift(tmp_path: Path) -> None:
    frames = _shifted_clip(tmp_path / "clip", n=4, h=24, w=40, dx=3)
    model = ShiftModel((3.0, 0.0))
    out = tmp_path / "grid.png"
    res = visualize(
        [tmp_path / "clip"],
        model=model,
        output=out,
        show="frame,flow,occlusion,error,pca",
        progress=False,
        grid_rows=4,
    )
    # features once per frame; forward and backward flow once per pair
    assert model.prepared == 4 and model.flow_calls == 2 * 3
    assert res.num_frames == 3 and res.flow_frames == 3 and res.panel_size == (24, 40)
    assert res.max_flow == pytest.approx(3.0)
    img = iio.imread(out)
    strip = P.caption_height(24)
    assert img.shape == (3 * (strip + 24) + 2 * GRID_GAP, 5 * 40 + 4 * 2, 3)
    for t in range(3):
        assert np.array_equal(_panel(img, 0, (24, 40), t), frames[t])
        # uniform rightward flow at the rim: the wheel's red, outside the legend corner
        flow = _panel(img, 1, (24, 40), t)
        assert (flow[:8, :20] == _naive_middlebury(3.0, 0.0, 3.0)).all()
        # forward-backward check: x + 3 leaves the 40-px frame exactly for the last 3 columns
        occ = _panel(img, 2, (24, 40), t)
        grey = np.round(frames[t].astype(float).mean(2) * 0.6)
        for x in range(40):
            if x + 3 > 39:
                assert (occ[:, x] == P.OCCLUDED_RGB).all()
            else:
                assert np.abs(occ[:, x, 0] - grey[:, x]).max() <= 1
        # the exact shift warps frame t+1 back onto frame t: zero error, grey where it leaves
        err = _panel(img, 3, (24, 40), t)
        assert (err[:, :37] == (0, 0, 4)).all()
        assert (err[:, 37:] == P.OUTSIDE_RGB).all()


def test_pipeline_propagates_a_mask(tmp_path: Path) -> None:
    _shifted_clip(tmp_path / "clip", n=3, h=32, w=48, dx=4)
    mask = np.zeros((32, 48), np.uint8)
    mask[8:24, 8:24] = 3  # object ids need not be consecutive
    img = Image.fromarray(mask, mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.save(tmp_path / "first.png")
    out = tmp_path / "m.png"
    res = visualize(
        [tmp_path / "clip"],
        model=ShiftModel((4.0, 0.0)),
        output=out,
        mask=tmp_path / "first.png",
        show="frame",
        progress=False,
        feature_stride=4,
    )
    assert res.panels == ("frame", "mask")
    grid = iio.imread(out)
    for t in range(2):  # 3 frames -> 2 output frames; the object moves 4 px (a cell) per frame
        frame = _panel(grid, 0, (32, 48), t)
        tinted = (_panel(grid, 1, (32, 48), t) != frame).any(-1)
        want = np.zeros((32, 48), bool)
        want[8:24, 8 + 4 * t : 24 + 4 * t] = True
        iou = (tinted & want).sum() / (tinted | want).sum()
        assert iou > 0.75, (t, iou)
        # boundaries are drawn in the object's own palette colour (VOC index 3: olive)
        overlay = _panel(grid, 1, (32, 48), t)
        assert (overlay == voc_palette()[3]).all(-1).sum() >= 40


# ----------------------------------------------------------------------------- command line


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("ext", "show", "extra", "fps"),
    [
        ("mp4", "frame,flow,occlusion,pca,error", [], 30.0),  # 4 frames -> 3 flow frames
        ("gif", "frame,flow", ["--stride", "2"], 15.0),  # frames 0, 2, 4, 6 -> 3 flow frames
        ("png", "flow,error", ["--grid", "2"], None),  # 3 flow frames, 2 sampled rows
    ],
)
def test_cli_video_with_checkpoint(
    shared_data: Path,
    viz_checkpoint: Path,
    tmp_path: Path,
    ext: str,
    show: str,
    extra: list[str],
    fps: float | None,
) -> None:
    out = tmp_path / f"out.{ext}"
    args = ["visualize", str(shared_data / "video" / "bedroom.mp4"), "-c", str(viz_checkpoint)]
    args += ["--output", str(out), "--max-frames", "4", "--size", "64", "--show", show]
    result = runner.invoke(app, args + extra + ["--no-progress"])
    assert result.exit_code == 0, result.output
    n = len(show.split(","))
    h, w = P.caption_height(64) + 64, n * 114 + (n - 1) * 2  # 960x540 -> 114x64 panels
    if ext == "png":
        assert iio.imread(out).shape == (2 * h + GRID_GAP, w, 3)
        return
    frames = iio.imread(out, index=None)
    if ext == "mp4":
        h, w = h + h % 2, w + w % 2  # yuv420p: padded to even sides, never rescaled
        assert iio.immeta(out, plugin="FFMPEG")["fps"] == pytest.approx(fps)
    else:
        assert iio.immeta(out)["duration"] == round(1000 / fps, -1)  # GIF delays: 10 ms steps
    assert frames.shape[:3] == (3, h, w)


@pytest.mark.shared_data
def test_cli_two_images_and_a_frame_folder(
    shared_data: Path, viz_checkpoint: Path, tmp_path: Path
) -> None:
    seq = shared_data / "middlebury" / "other-data" / "RubberWhale"
    out = tmp_path / "pair.png"
    result = runner.invoke(
        app,
        [
            "visualize",
            str(seq / "frame10.png"),
            str(seq / "frame11.png"),
            "-c",
            str(viz_checkpoint),
            "--output",
            str(out),
            "--size",
            "48",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    w = round(584 * 48 / 388)
    assert iio.imread(out).shape == (P.caption_height(48) + 48, 2 * w + 2, 3)

    folder = tmp_path / "frames"
    shutil.copytree(shared_data / "video" / "bedroom_frames", folder)
    out = tmp_path / "folder.gif"
    result = runner.invoke(
        app,
        [
            "visualize",
            str(folder),
            "-c",
            str(viz_checkpoint),
            "--output",
            str(out),
            "--size",
            "40",
            "--stride",
            "2",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    frames = iio.imread(out, index=None)
    assert frames.shape[:3] == (2, P.caption_height(40) + 40, 2 * 71 + 2)  # 5 frames, stride 2 -> 3


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "flo",
    [
        "middlebury/other-gt-flow/RubberWhale/flow10.flo",
        "sintel/training/flow/alley_1/frame_0002.flo",
    ],
)
def test_cli_colours_ground_truth_flow_files(shared_data: Path, tmp_path: Path, flo: str) -> None:
    from mcjepa_cli.io.flow_io import read_flo

    path = shared_data / flo
    out = tmp_path / "gt.png"
    result = runner.invoke(
        app, ["visualize", "--flow", str(path), "--output", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    raw = read_flo(path)  # (H, W, 2)
    known = np.isfinite(raw).all(-1) & (np.abs(raw) < 1e9).all(-1)
    h, w = raw.shape[:2]
    img = iio.imread(out)
    assert img.shape == (P.caption_height(h) + h, w, 3)
    panel = img[P.caption_height(h) :]
    rim = float(np.percentile(np.hypot(raw[..., 0], raw[..., 1])[known], 99))
    rows = np.arange(0, h, 17)  # a sample of rows, away from the legend corner
    cols = np.arange(0, w // 2, 13)
    sub = raw[np.ix_(rows, cols)]
    want = _naive_flow_image(sub, rim, known[np.ix_(rows, cols)])
    assert np.abs(panel[np.ix_(rows, cols)].astype(int) - want.astype(int)).max() <= 2
    if (~known).any():  # Middlebury marks unknown pixels: painted black
        ys, xs = np.nonzero(~known)
        assert (panel[ys, xs] == 0).all()


def test_resize_known_flow_averages_known_pixels_only() -> None:
    from mcjepa_cli.viz.run import resize_known_flow

    flow = torch.zeros(2, 8, 12)
    flow[0], flow[1] = 4.0, -2.0
    valid = torch.ones(8, 12, dtype=torch.bool)
    valid[:, 8:] = False
    flow[:, :, 8:] = 1e9  # unknown values must not leak into their neighbours
    out, ok = resize_known_flow(flow, valid, (4, 6))
    assert ok[:, :4].all() and not ok[:, 4:].any()
    # halving both sides halves the displacements
    assert torch.allclose(out[0][ok], torch.tensor(2.0)) and torch.allclose(
        out[1][ok], torch.tensor(-1.0)
    )


@pytest.mark.shared_data
def test_cli_flow_file_beside_its_frames_resized(shared_data: Path, tmp_path: Path) -> None:
    seq = shared_data / "middlebury"
    out = tmp_path / "gt.png"
    args = ["visualize", str(seq / "other-data" / "Venus" / "frame10.png")]
    args += [str(seq / "other-data" / "Venus" / "frame11.png"), "--size", "50"]
    args += [
        "--flow",
        str(seq / "other-gt-flow" / "Venus" / "flow10.flo"),
        "--show",
        "frame,flow,error",
    ]
    result = runner.invoke(app, args + ["--output", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    w = round(420 * 50 / 380)  # Venus is 420x380
    img = iio.imread(out)
    assert img.shape == (P.caption_height(50) + 50, 3 * w + 2 * 2, 3)
    # at full size, the ground truth leaves less error than a zero flow (written as a .flo)
    from mcjepa_cli.io.flow_io import write_flo

    write_flo(tmp_path / "zero.flo", np.zeros((380, 420, 2), np.float32))
    means = []
    for flo in (seq / "other-gt-flow" / "Venus" / "flow10.flo", tmp_path / "zero.flo"):
        res = visualize(
            [seq / "other-data" / "Venus" / f"frame1{k}.png" for k in (0, 1)],
            flow_files=[flo],
            show="error",
            output=tmp_path / f"{flo.stem}.png",
            progress=False,
        )
        panel = iio.imread(res.output)[P.caption_height(380) :].astype(float)
        means.append(panel.sum(-1).mean())
    assert means[0] < 0.7 * means[1], means


def test_cli_user_errors_are_one_line(tmp_path: Path) -> None:
    _shifted_clip(tmp_path / "clip", n=3)
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(tmp_path / "clip" / "00000.png", one / "00000.png")
    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    Image.new("RGB", (30, 22)).save(tmp_path / "b.png")
    bad_video = tmp_path / "broken.mp4"
    bad_video.write_text("not a video")
    (tmp_path / "exists.mp4").write_bytes(b"x")
    cases = [
        ["visualize", str(tmp_path / "missing.mp4")],
        ["visualize", str(bad_video), "--output", str(tmp_path / "o1.mp4")],
        ["visualize", str(tmp_path / "clip"), "--output", str(tmp_path / "o.avi")],
        ["visualize", str(one), "--output", str(tmp_path / "o2.mp4")],
        ["visualize", str(tmp_path / "clip"), "--max-frames", "1"],
        ["visualize", str(tmp_path / "clip"), "--output", str(tmp_path / "exists.mp4")],
        ["visualize", str(tmp_path / "clip"), "--show", "frame,depth"],
        ["visualize", str(tmp_path / "clip" / "00000.png")],
        ["visualize", str(tmp_path / "a.png"), str(tmp_path / "b.png")],
        ["visualize", str(tmp_path / "clip"), "--show", "mask"],
        ["visualize", "--flow", str(tmp_path / "a.png"), "--show", "pca"],
    ]
    for args in cases:
        _one_error_line(runner.invoke(app, args))
    assert (tmp_path / "exists.mp4").read_bytes() == b"x"


def test_gif_keeps_the_colour_wheel_legend_smooth(tmp_path):
    """One 256-colour palette per GIF frame: the legend (every hue, a small area) must keep its
    local colours (dithered), not be posterised to a few bands."""
    h, w = 240, 320
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    flow = torch.stack([xx * 5 + torch.sin(yy * 6), yy * 5], 0)
    panel = P.add_flow_legend(P.flow_to_rgb(flow, 6.0))  # (3, H, W) uint8, wheel bottom right
    src = panel.permute(1, 2, 0).numpy()
    out = tmp_path / "legend.gif"
    with open_frame_writer(out, fps=5, num_frames=1) as writer:
        writer.append(src)
    got = np.asarray(Image.open(out).convert("RGB"))
    r = min(max(min(h, w) // 8, 8), 48)
    m = max(2, r // 4)
    sl = (slice(h - m - 2 * r - 1, h - m), slice(w - m - 2 * r - 1, w - m))

    def local_mean(a: np.ndarray) -> np.ndarray:  # 3x3 box mean, what the eye averages
        t = torch.from_numpy(a[sl].astype(np.float32)).permute(2, 0, 1)[None]
        return F.avg_pool2d(t, 3, stride=1).numpy()

    err = float(np.abs(local_mean(got) - local_mean(src)).mean())
    assert err < 2.5, err  # dithered: 2.05; median cut without dithering: 2.99
