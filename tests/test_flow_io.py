"""Flow file IO: exact round trips, independent decoding, and clear errors on bad bytes."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import png
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mcjepa_cli.errors import UserError
from mcjepa_cli.io.flow_io import (
    read_flo,
    read_flow,
    read_kitti_png,
    read_pfm,
    write_flo,
    write_flow,
    write_kitti_png,
    write_pfm,
)


def _random_flow(rng: np.random.Generator, h: int = 6, w: int = 9) -> np.ndarray:
    return (rng.normal(size=(h, w, 2)) * 20).astype(np.float32)


# ------------------------------------------------------------------------------- .flo
def test_flo_round_trip_is_bit_exact_including_unknown_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    flow = _random_flow(rng)
    flow[0, 0] = (np.nan, 1.0)
    flow[1, 2] = (2.0, 1e10)
    flow[3, 4] = (-np.inf, 0.0)
    flow[2, 2] = (1e9, -1e9)  # exactly 1e9 in float32 is 1e9: still known (|v| > 1e9 is unknown)
    write_flo(tmp_path / "a.flo", flow)
    back = read_flo(tmp_path / "a.flo")
    assert back.dtype == np.float32 and back.shape == flow.shape
    assert back.tobytes() == flow.tobytes()  # bit-exact, NaN payloads included
    _, valid = read_flow(tmp_path / "a.flo")
    expected = np.ones(flow.shape[:2], dtype=bool)
    for y, x in [(0, 0), (1, 2), (3, 4)]:
        expected[y, x] = False
    np.testing.assert_array_equal(valid, expected)


def test_flo_write_with_valid_mask_round_trips_validity(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    flow = _random_flow(rng)
    valid = rng.random(flow.shape[:2]) > 0.3
    write_flo(tmp_path / "b.flo", flow, valid)
    back, back_valid = read_flow(tmp_path / "b.flo")
    np.testing.assert_array_equal(back_valid, valid)
    np.testing.assert_array_equal(back[valid], flow[valid])


def test_read_flo_matches_a_hand_built_file(tmp_path: Path) -> None:
    h, w = 3, 4
    values = np.arange(h * w * 2, dtype=np.float64) * 0.25 - 2.0
    raw = b"PIEH" + struct.pack("<ii", w, h) + struct.pack(f"<{h * w * 2}f", *values)
    assert struct.unpack("<f", b"PIEH")[0] == 202021.25
    (tmp_path / "h.flo").write_bytes(raw)
    flow = read_flo(tmp_path / "h.flo")
    # u, v interleaved row by row: pixel (y, x) holds values[2 * (y * w + x) + c]
    for y in range(h):
        for x in range(w):
            for c in range(2):
                assert flow[y, x, c] == values[2 * (y * w + x) + c]


def test_shared_flo_validity_matches_numpy(shared_data: Path) -> None:
    path = shared_data / "middlebury" / "other-gt-flow" / "Urban3" / "flow10.flo"
    raw = np.fromfile(path, dtype="<f4")[3:].reshape(-1, 2)
    flow, valid = read_flow(path)
    known = np.isfinite(raw).all(1) & (np.abs(raw) <= 1e9).all(1)
    np.testing.assert_array_equal(valid.reshape(-1), known)
    np.testing.assert_array_equal(flow.reshape(-1, 2)[known], raw[known])


# -------------------------------------------------------------------------------- KITTI
def test_kitti_png_round_trip_is_exact_on_the_grid(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    h, w = 7, 11
    ticks = rng.integers(-(2**15), 2**15, size=(h, w, 2))  # every 1/64 step in [-512, 512)
    ticks[0, 0] = (-(2**15), 2**15 - 1)  # both ends of the range
    flow = (ticks / 64.0).astype(np.float32)
    valid = rng.random((h, w)) > 0.4
    write_kitti_png(tmp_path / "k.png", flow, valid)
    back, back_valid = read_kitti_png(tmp_path / "k.png")
    assert back.dtype == np.float32 and back.shape == (h, w, 2)
    np.testing.assert_array_equal(back, flow)  # invalid pixels keep their values too
    np.testing.assert_array_equal(back_valid, valid)
    # independent decode with pypng: R, G = flow * 64 + 2^15, B = valid
    _, _, rows, info = png.Reader(filename=str(tmp_path / "k.png")).read()
    assert info["bitdepth"] == 16 and info["planes"] == 3
    arr = np.vstack([np.asarray(r, dtype=np.int64) for r in rows]).reshape(h, w, 3)
    np.testing.assert_array_equal(arr[..., :2], ticks + 2**15)
    np.testing.assert_array_equal(arr[..., 2], valid.astype(np.int64))


def test_kitti_png_rounds_to_the_grid_and_clips(tmp_path: Path) -> None:
    flow = np.array([[[0.3 / 64, 1000.0], [-1000.0, np.nan]]], dtype=np.float32)
    write_kitti_png(tmp_path / "c.png", flow)
    back, valid = read_kitti_png(tmp_path / "c.png")
    assert back[0, 0, 0] == 0.0
    assert back[0, 0, 1] == (65535 - 2**15) / 64
    assert back[0, 1, 0] == -512.0
    assert valid.tolist() == [[True, False]]  # non-finite -> invalid


def test_shared_kitti_png_matches_pypng(shared_data: Path) -> None:
    path = shared_data / "kitti2015" / "training" / "flow_occ" / "000000_10.png"
    flow, valid = read_kitti_png(path)
    w, h, rows, _ = png.Reader(filename=str(path)).read()
    arr = np.vstack([np.asarray(r, dtype=np.float64) for r in rows]).reshape(h, w, 3)
    np.testing.assert_array_equal(flow, ((arr[..., :2] - 2**15) / 64).astype(np.float32))
    np.testing.assert_array_equal(valid, arr[..., 2] > 0)
    assert valid.sum() == 75453


# ---------------------------------------------------------------------------------- PFM
def test_pfm_round_trip_three_and_one_channels(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rgb = rng.normal(size=(5, 4, 3)).astype(np.float32)
    write_pfm(tmp_path / "c.pfm", rgb)
    np.testing.assert_array_equal(read_pfm(tmp_path / "c.pfm"), rgb)
    grey = rng.normal(size=(3, 6)).astype(np.float32)
    write_pfm(tmp_path / "g.pfm", grey)
    np.testing.assert_array_equal(read_pfm(tmp_path / "g.pfm"), grey[..., None])
    flow = _random_flow(rng)
    valid = rng.random(flow.shape[:2]) > 0.5
    write_flow(tmp_path / "f.pfm", flow, valid)
    back, back_valid = read_flow(tmp_path / "f.pfm")
    np.testing.assert_array_equal(back_valid, valid)
    np.testing.assert_array_equal(back[valid], flow[valid])


@pytest.mark.parametrize("endian", ["<", ">"])
def test_read_pfm_hand_built_endianness_and_row_order(tmp_path: Path, endian: str) -> None:
    h, w = 3, 2
    top_first = np.arange(h * w * 3, dtype=np.float32).reshape(h, w, 3)
    scale = "-1.0" if endian == "<" else "1.0"
    body = top_first[::-1].astype(f"{endian}f4").tobytes()  # PFM stores the bottom row first
    (tmp_path / "e.pfm").write_bytes(f"PF\n{w} {h}\n{scale}\n".encode() + body)
    np.testing.assert_array_equal(read_pfm(tmp_path / "e.pfm"), top_first)


# ------------------------------------------------------------------------------- errors
def _write_valid_files(folder: Path) -> dict[str, bytes]:
    flow = _random_flow(np.random.default_rng(4), 4, 5)
    write_flo(folder / "v.flo", flow)
    write_kitti_png(folder / "v.png", flow)
    write_pfm(folder / "v.pfm", flow)
    return {ext: (folder / f"v{ext}").read_bytes() for ext in (".flo", ".png", ".pfm")}


def test_bad_files_raise_user_errors_naming_the_file(tmp_path: Path) -> None:
    good = _write_valid_files(tmp_path)
    cases = {
        "magic.flo": b"XXXX" + good[".flo"][4:],
        "trunc.flo": good[".flo"][:-3],
        "extra.flo": good[".flo"] + b"\0\0\0\0",
        "dims.flo": b"PIEH" + struct.pack("<ii", -5, 4) + good[".flo"][12:],
        "short.flo": b"PIE",
        "trunc.png": good[".png"][: len(good[".png"]) // 2],
        "text.png": b"hello",
        "trunc.pfm": good[".pfm"][:-1],
        "extra.pfm": good[".pfm"] + b"\0",
        "magic.pfm": b"P6" + good[".pfm"][2:],
        "zero.pfm": b"PF\n5 4\n0.0\n" + good[".pfm"].split(b"-1.0\n", 1)[1],
        "empty.flo": b"",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(UserError) as err:
            read_flow(path)
        assert name in str(err.value), name
    with pytest.raises(UserError, match="not found"):
        read_flow(tmp_path / "missing.flo")
    with pytest.raises(UserError, match="extension"):
        read_flow(tmp_path / "v.txt")


def test_kitti_reader_refuses_8bit_and_grey_pngs(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 5, 3), dtype=np.uint8)).save(tmp_path / "rgb8.png")
    with pytest.raises(UserError, match="16-bit"):
        read_kitti_png(tmp_path / "rgb8.png")
    with open(tmp_path / "grey16.png", "wb") as f:
        writer = png.Writer(width=5, height=4, greyscale=True, bitdepth=16)
        writer.write(f, np.zeros((4, 5), np.uint16))
    with pytest.raises(UserError, match="16-bit RGB"):
        read_kitti_png(tmp_path / "grey16.png")


def test_pfm_one_channel_is_not_a_flow(tmp_path: Path) -> None:
    write_pfm(tmp_path / "g.pfm", np.zeros((2, 3), np.float32))
    with pytest.raises(UserError, match="1-channel"):
        read_flow(tmp_path / "g.pfm")


@pytest.fixture(scope="module")
def fuzz_seeds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    folder = tmp_path_factory.mktemp("fuzz")
    return folder, _write_valid_files(folder)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ext=st.sampled_from([".flo", ".png", ".pfm"]),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 10_000)),
    junk=st.binary(max_size=40),
    from_scratch=st.booleans(),
)
def test_fuzzed_bytes_only_raise_user_errors(
    fuzz_seeds: tuple[Path, dict[str, bytes]], ext: str, edits: list[tuple[int, int]],
    cut: int | None, junk: bytes, from_scratch: bool,
) -> None:
    folder, good = fuzz_seeds
    data = bytearray(junk if from_scratch else good[ext])
    for pos, value in edits:
        if data:
            data[pos % len(data)] = value
    if cut is not None and data:
        data = data[: cut % (len(data) + 1)]
    if not from_scratch:
        data += junk[:3]
    path = folder / f"fuzz{ext}"
    path.write_bytes(bytes(data))
    try:
        flow, valid = read_flow(path)
    except UserError:
        return
    assert flow.ndim == 3 and flow.shape[-1] == 2 and valid.shape == flow.shape[:2]


def test_pypng_fallback_decodes_like_libpng(tmp_path: Path, shared_data: Path) -> None:
    from mcjepa_cli.io import flow_io

    path = shared_data / "kitti2015" / "training" / "flow_occ" / "000000_10.png"
    clean, h, w = flow_io._checked_kitti_png(path, path.read_bytes())
    np.testing.assert_array_equal(
        flow_io._decode_rgb16_pypng(path, clean, h, w), flow_io._decode_rgb16(path, clean, h, w)
    )
