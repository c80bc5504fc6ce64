"""Video reading shared by pretraining (video frame pairs) and ``mcjepa visualize``: video files
(mp4, webm, avi, mov, mkv, m4v through imageio's ffmpeg backend; gif through Pillow), folders of
frames and lists of image files all come out as RGB ``uint8`` frames (3, H, W).

Every failure to open or decode names the file in a ``UserError``. Writing videos is the
visualize command's business, not this module's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mcjepa_cli.errors import UserError
from mcjepa_cli.io.images import IMAGE_EXTENSIONS, read_image

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mov", ".mkv", ".m4v", ".gif")

# what a frame source may be: a video file, a folder of frames, or an explicit list of image files
FrameSource = str | Path | Sequence[str | Path]

Size = int | tuple[int, int] | Sequence[int]


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a frame source without decoding all of it."""

    path: str  # the video file or frame folder ("<list of N images>" for a list)
    fps: float | None  # frames per second; None for frame folders / image lists
    num_frames: int | None  # frame count (None when the container does not say)
    num_frames_exact: bool  # False when num_frames is estimated from duration x fps
    height: int
    width: int


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders ``frame_2`` before ``frame_10`` (digit runs compared as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def is_video_file(path: str | Path) -> bool:
    """True when ``path`` has one of the ``VIDEO_EXTENSIONS`` (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def is_image_file(path: str | Path) -> bool:
    """True when ``path`` has one of the image extensions ``read_image`` decodes."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_frame_files(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, in natural order (``frame_2`` before ``frame_10``).

    Raises:
        UserError: the folder is missing or holds no image file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(folder, "frame folder not found")
    files = [p for p in folder.iterdir() if p.is_file() and is_image_file(p)]
    if not files:
        raise UserError(
            folder, f"no frames found (expected image files {', '.join(IMAGE_EXTENSIONS)})"
        )
    return sorted(files, key=lambda p: natural_key(p.name))


def _target_size(size: Size | None, height: int, width: int) -> tuple[int, int] | None:
    """(H, W) to resize to: a pair is exact; an int is the shorter side (aspect ratio kept)."""
    if size is None:
        return None
    if isinstance(size, int):
        if size <= 0:
            raise UserError(f"size {size}", "expected a positive shorter side in pixels")
        scale = size / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    pair = tuple(int(s) for s in size)
    if len(pair) != 2 or min(pair) <= 0:
        raise UserError(
            f"size {size!r}", "expected an int (shorter side) or a positive (height, width) pair"
        )
    return pair  # type: ignore[return-value]


def resize_frame(frame: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a uint8 frame (3, H, W) to ``size`` = (H', W') (bilinear, antialiased), uint8 out."""
    if tuple(frame.shape[-2:]) == tuple(size):
        return frame
    out = F.interpolate(
        frame[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True
    )  # (1, 3, H', W')
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def _decode_error(path: Path, err: BaseException, what: str = "cannot decode video") -> UserError:
    # imageio's ffmpeg errors carry ffmpeg's whole stderr; its last line says what went wrong
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    detail = lines[-1] if lines else err.__class__.__name__
    return UserError(path, f"{what} ({detail[:200]})")


class _DropResizeNotice(logging.Filter):
    """Hides imageio-ffmpeg's warning that the output size differs from the source size: when
    we ask ffmpeg to scale, that is the point."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "different from the source frame size" not in record.getMessage()


def _ffmpeg_open(path: Path, size: tuple[int, int] | None = None):
    """Start ffmpeg on ``path`` (scaling to ``size`` = (H, W) if given); returns (meta, frames)."""
    import imageio_ffmpeg

    params = None
    if size is not None:
        params = ["-vf", f"scale={size[1]}:{size[0]}:flags=area"]  # area: antialiased downscale
    quiet = _DropResizeNotice()
    logger = logging.getLogger("imageio_ffmpeg")
    logger.addFilter(quiet)
    gen = imageio_ffmpeg.read_frames(str(path), output_params=params)
    try:
        meta = next(gen)  # ffmpeg's description of the stream; the frames follow
    except (OSError, RuntimeError, ValueError, StopIteration, AttributeError) as e:
        gen.close()
        raise _decode_error(path, e, "cannot open video") from None
    finally:
        logger.removeFilter(quiet)
    return meta, gen


def _video_frames_raw(path: Path, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Yield the (H, W, 3) uint8 frames of a video file in order (scaled by ffmpeg to ``size``)."""
    if not path.is_file():
        raise UserError(path, "video file not found")
    if path.suffix.lower() == ".gif":
        import imageio.v3 as iio

        try:
            for k, arr in enumerate(iio.imiter(path, plugin="pillow", mode="RGB")):
                frame = _as_rgb(arr, path, k)
                if size is not None:
                    frame = (
                        resize_frame(torch.from_numpy(frame).permute(2, 0, 1), size)
                        .permute(1, 2, 0)
                        .numpy()
                    )
                yield frame
        except (OSError, ValueError, SyntaxError) as e:
            raise _decode_error(path, e, "cannot decode gif") from None
        return
    meta, gen = _ffmpeg_open(path, size)
    w, h = meta["size"]
    try:
        k = 0
        while True:
            try:
                buf = next(gen)
            except StopIteration:
                return
            except (OSError, RuntimeError, ValueError) as e:
                raise _decode_error(path, e, f"cannot decode frame {k}") from None
            yield np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)
            k += 1
    finally:
        gen.close()  # stops ffmpeg


def _as_rgb(arr: np.ndarray, path: Path, k: int) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise UserError(path, f"frame {k}: expected an RGB frame, got array shape {arr.shape}")
    return np.ascontiguousarray(arr[..., :3].astype(np.uint8, copy=False))


def _image_list(source: FrameSource) -> list[Path] | None:
    """The image files of a folder/list source, or None when ``source`` is a video file."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            return list_frame_files(path)
        if not path.exists():
            raise UserError(
                path, "not found (expected a video file, a folder of frames or image files)"
            )
        if is_video_file(path):
            return None
        if is_image_file(path):
            return [path]
        raise UserError(
            path,
            f"unsupported file type (expected a video {', '.join(VIDEO_EXTENSIONS)} "
            f"or a folder of frames)",
        )
    files = [Path(p) for p in source]
    if not files:
        raise UserError("frame list", "expected at least one image file, got an empty list")
    return files


def iter_frames(
    source: FrameSource, max_frames: int | None = None, stride: int = 1, size: Size | None = None
) -> Iterator[torch.Tensor]:
    """Yield the frames of a video file, a folder of frames or a list of image files.

    Args:
        source: a video file (mp4, webm, avi, mov, mkv, m4v, gif), a folder of frames (sorted
            naturally), or a list of image files (in the given order).
        max_frames: stop after this many frames (counted after striding); None = all.
        stride: keep every ``stride``-th frame (1 = every frame).
        size: resize each frame: an int is the shorter side (aspect ratio kept), a pair is an
            exact (height, width); None keeps the decoded size.

    Yields:
        RGB uint8 tensors (3, H, W).

    Raises:
        UserError: missing or undecodable file (named), bad ``stride``/``max_frames``/``size``.
    """
    if stride < 1:
        raise UserError(f"stride {stride}", "expected an integer >= 1")
    if max_frames is not None and max_frames < 1:
        raise UserError(f"max_frames {max_frames}", "expected an integer >= 1 or None")
    files = _image_list(source)
    emitted = 0
    target: tuple[int, int] | None = None
    if files is not None:
        for path in files[::stride]:
            frame = read_image(path)  # (3, H, W) uint8, grey/RGBA/16-bit handled
            if target is None:
                target = _target_size(size, frame.shape[1], frame.shape[2])
            yield resize_frame(frame, target) if target else frame
            emitted += 1
            if max_frames is not None and emitted >= max_frames:
                return
        return
    path = Path(source)  # type: ignore[arg-type]
    if size is not None:
        info = video_info(path)
        target = _target_size(size, info.height, info.width)
    frames = _video_frames_raw(path, target)  # ffmpeg does the resizing
    try:
        for k, arr in enumerate(frames):
            if k % stride:
                continue
            frame = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()  # (3, H, W)
            yield resize_frame(frame, target) if target else frame
            emitted += 1
            if max_frames is not None and emitted >= max_frames:
                return
    finally:
        frames.close()  # stops ffmpeg when the caller stops early
    if emitted == 0:
        raise UserError(path, "the video holds no decodable frame")


def read_video_frames(
    source: FrameSource, max_frames: int | None = None, stride: int = 1, size: Size | None = None
) -> tuple[torch.Tensor, float | None]:
    """Decode a whole frame source into memory.

    Args: as ``iter_frames``.

    Returns:
        ``(frames, fps)``: uint8 tensor (T, 3, H, W) and the video's frames per second divided
        by ``stride`` (None for frame folders and image lists, which carry no timing).

    Raises:
        UserError: missing/undecodable file (named), frames of different sizes in a folder.
    """
    frames = list(iter_frames(source, max_frames=max_frames, stride=stride, size=size))
    shapes = {tuple(f.shape) for f in frames}
    if len(shapes) > 1:
        raise UserError(
            _describe(source),
            f"frames differ in size ({sorted(shapes)[:3]}); pass size= to resize them to one size",
        )
    info_fps = None
    if isinstance(source, (str, Path)) and is_video_file(source):
        info_fps = video_info(source).fps
    fps = info_fps / stride if info_fps else None
    return torch.stack(frames), fps  # (T, 3, H, W)


def _describe(source: FrameSource) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return f"<list of {len(source)} images>"


def video_info(source: FrameSource, exact_count: bool = False) -> VideoInfo:
    """Frame rate, frame count and frame size of a frame source.

    Args:
        source: as ``iter_frames``.
        exact_count: for video files whose container gives no frame count, count the frames by
            decoding (exact but slow: about the cost of decoding the video); otherwise the count
            is estimated from duration x fps and ``num_frames_exact`` is False.

    Raises:
        UserError: missing or unreadable source (named).
    """
    files = _image_list(source)
    if files is not None:
        first = read_image(files[0])
        return VideoInfo(
            _describe(source), None, len(files), True, int(first.shape[1]), int(first.shape[2])
        )
    path = Path(source)  # type: ignore[arg-type]
    if path.suffix.lower() == ".gif":
        from PIL import Image

        try:
            with Image.open(path) as img:
                n = int(getattr(img, "n_frames", 1))
                duration_ms = img.info.get("duration")
                w, h = img.size
        except Image.DecompressionBombError as e:
            raise UserError(path, f"image too large to decode safely ({e})") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise _decode_error(path, e, "cannot open gif") from None
        fps = 1000.0 / duration_ms if duration_ms else None
        return VideoInfo(str(path), fps, n, True, h, w)
    meta, gen = _ffmpeg_open(path)
    gen.close()
    fps = float(meta["fps"]) if meta.get("fps") else None
    w, h = meta["size"]
    duration = meta.get("duration")
    count = int(round(duration * fps)) if duration and fps else None
    exact = False
    if exact_count:
        import imageio_ffmpeg

        try:
            count, exact = int(imageio_ffmpeg.count_frames_and_secs(str(path))[0]), True
        except (OSError, RuntimeError, ValueError) as e:
            raise _decode_error(path, e, "cannot count frames") from None
    return VideoInfo(str(path), fps, count, exact, int(h), int(w))
