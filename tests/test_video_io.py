"""Video reading (mcjepa_cli.io.video): video files, frame folders and image lists, and errors."""

from __future__ import annotations

from pathlib import Path

import imageio
import numpy as np
import pytest
import torch
from PIL import Image

from mcjepa_cli.errors import UserError
from mcjepa_cli.io.video import iter_frames, list_frame_files, read_video_frames, video_info

LEVELS = [30 + 20 * k for k in range(8)]  # frame k is a flat grey of this level (+ a pattern)


def _frame(k: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Frame k (H, W, 3) uint8: flat level LEVELS[k], the red channel brighter on the left."""
    arr = np.full((h, w, 3), LEVELS[k], dtype=np.uint8)
    arr[:, : w // 2, 0] = min(255, LEVELS[k] + 40)
    return arr


@pytest.fixture(scope="module")
def mp4(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = imageio.get_writer(str(path), format="FFMPEG", fps=10, quality=10, macro_block_size=16)
    for k in range(8):
        writer.append_data(_frame(k))
    writer.close()
    return path


def test_mp4_frames_fps_and_content(mp4: Path) -> None:
    frames, fps = read_video_frames(mp4)
    assert frames.dtype == torch.uint8 and frames.shape == (8, 3, 48, 64)
    assert fps == pytest.approx(10.0)
    for k in range(8):  # lossy H.264 on flat areas: within a few levels of what was written
        expected = _frame(k).astype(np.float64).transpose(2, 0, 1)
        err = np.abs(frames[k].numpy().astype(np.float64) - expected)
        assert (
            err[:, 4:-4, 4:28].max() <= 4 and err[:, 4:-4, 36:-4].max() <= 4
        )  # away from the edge


def test_stride_max_frames_and_resize(mp4: Path) -> None:
    frames, fps = read_video_frames(mp4, stride=2, max_frames=3)
    assert frames.shape[0] == 3 and fps == pytest.approx(5.0)
    means = frames[:, 1:].float().mean(dim=(1, 2, 3)).numpy()  # green/blue: the flat level
    np.testing.assert_allclose(means, [LEVELS[0], LEVELS[2], LEVELS[4]], atol=3)
    small, _ = read_video_frames(mp4, max_frames=2, size=24)  # shorter side 24, aspect kept
    assert small.shape == (2, 3, 24, 32)
    exact = next(iter_frames(mp4, size=(20, 30)))
    assert exact.shape == (3, 20, 30)


def test_video_info(mp4: Path) -> None:
    info = video_info(mp4, exact_count=True)
    assert (info.fps, info.num_frames, info.num_frames_exact, info.height, info.width) == (
        10.0,
        8,
        True,
        48,
        64,
    )
    estimate = video_info(mp4)
    assert estimate.num_frames == 8  # 0.8 s x 10 fps


def test_gif(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [Image.fromarray(_frame(k, 16, 20)) for k in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    out, fps = read_video_frames(path)
    assert out.shape == (3, 3, 16, 20) and fps == pytest.approx(20.0)
    for k in range(3):
        np.testing.assert_array_equal(out[k].numpy(), _frame(k, 16, 20).transpose(2, 0, 1))
    assert video_info(path).num_frames == 3


def test_frame_folder_natural_order_and_formats(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    # frame_2 must come before frame_10; grey, RGBA and 16-bit files all become RGB uint8
    Image.fromarray(np.full((6, 8), 10, np.uint8), mode="L").save(folder / "frame_2.png")
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7
    Image.fromarray(rgba, mode="RGBA").save(folder / "frame_10.png")
    Image.fromarray(np.full((6, 8), 65535, np.uint16)).save(folder / "frame_1.png")
    (folder / "notes.txt").write_text("not a frame")
    assert [p.name for p in list_frame_files(folder)] == [
        "frame_1.png",
        "frame_2.png",
        "frame_10.png",
    ]
    frames, fps = read_video_frames(folder)
    assert fps is None and frames.shape == (3, 3, 6, 8)
    assert (frames[0] == 255).all()  # 16-bit full scale -> 255 in all channels
    assert (frames[1] == 10).all()  # grey copied to the 3 channels
    assert (frames[2, 0] == 200).all() and (frames[2, 1:] == 0).all()  # alpha dropped
    info = video_info(folder)
    assert (info.num_frames, info.height, info.width, info.fps) == (3, 6, 8, None)


def test_image_list_keeps_given_order(tmp_path: Path) -> None:
    paths = []
    for k, level in enumerate((50, 100, 150)):
        p = tmp_path / f"img{k}.png"
        Image.fromarray(np.full((4, 5, 3), level, np.uint8)).save(p)
        paths.append(p)
    frames, _ = read_video_frames([paths[2], paths[0]])
    assert frames[:, 0, 0, 0].tolist() == [150, 50]


def test_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.mp4"
    with pytest.raises(UserError) as e:
        read_video_frames(missing)
    assert str(missing) in str(e.value)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x01garbage" * 100)
    for call in (lambda: read_video_frames(corrupt), lambda: video_info(corrupt)):
        with pytest.raises(UserError) as e:
            call()
        assert e.value.culprit == str(corrupt)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError) as e:
        read_video_frames(empty)
    assert e.value.culprit == str(empty) and "no frames" in e.value.expected
    other = tmp_path / "data.csv"
    other.write_text("1,2")
    with pytest.raises(UserError, match="unsupported file type"):
        read_video_frames(other)
    with pytest.raises(UserError, match="stride"):
        next(iter_frames(empty, stride=0))


def test_truncated_frame_in_folder_names_it(tmp_path: Path) -> None:
    folder = tmp_path / "seq"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "00000.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "00001.png")
    data = (folder / "00001.png").read_bytes()
    (folder / "00001.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as e:
        read_video_frames(folder)
    assert e.value.culprit == str(folder / "00001.png")


def test_real_video_matches_its_extracted_frames(shared_data: Path) -> None:
    video = shared_data / "video" / "bedroom.mp4"
    frames, fps = read_video_frames(video, max_frames=5)
    assert frames.shape == (5, 3, 540, 960) and fps == pytest.approx(30.0)
    jpegs, _ = read_video_frames(shared_data / "video" / "bedroom_frames")
    assert jpegs.shape == (5, 3, 540, 960)
    diff = (frames.float() - jpegs.float()).abs().mean(dim=(1, 2, 3))  # (5,)
    assert float(diff.max()) < 6.0  # same frames up to JPEG vs H.264 coding noise
    # and each decoded frame is closer to its own JPEG than to the last one, 4 frames later
    far = (frames[0].float() - jpegs[4].float()).abs().mean()
    assert float(diff[0]) < float(far)
    info = video_info(video)
    assert (info.height, info.width, info.fps, info.num_frames) == (540, 960, 30.0, 200)
