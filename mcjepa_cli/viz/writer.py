"""Frame writers chosen by file extension: H.264 .mp4 (imageio-ffmpeg), .gif, or a .png grid.

Every writer works on a temporary file beside the target that is renamed into place only when
all frames are written (``atomic_path``): an interrupted run never leaves half a video. The GIF
and PNG writers encode in memory and write the bytes with ``io.atomic.write_into``, so a full
disk is reported like any other write error (one line naming the output).
"""

from __future__ import annotations

import contextlib
import errno
import io
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mcjepa_cli.io.atomic import atomic_path, write_into

OUTPUT_EXTENSIONS = (".mp4", ".gif", ".png")
GRID_GAP = 4  # black rows between the sampled frames of a .png grid


def output_kind(path: str | Path) -> str:
    """The writer for ``path`` ("mp4", "gif" or "png"); ValueError for anything else."""
    ext = Path(path).suffix.lower()
    if ext not in OUTPUT_EXTENSIONS:
        raise ValueError(
            f"cannot write {ext or 'a file without extension'!r}: "
            f"expected {', '.join(OUTPUT_EXTENSIONS)}"
        )
    return ext[1:]


def grid_indices(num_frames: int, rows: int) -> list[int]:
    """Indices of at most ``rows`` frames spread evenly over ``num_frames`` (first, last kept)."""
    if num_frames < 1 or rows < 1:
        raise ValueError(f"need num_frames >= 1 and rows >= 1, got {num_frames}, {rows}")
    if rows >= num_frames:
        return list(range(num_frames))
    return sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, rows)})


def even_size(height: int, width: int) -> tuple[int, int]:
    """(H, W) rounded up to even numbers (yuv420p stores chroma at half resolution)."""
    return height + height % 2, width + width % 2


def _hwc(frame: torch.Tensor | np.ndarray) -> np.ndarray:
    """A (3, H, W) tensor or (H, W, 3) array as a contiguous (H, W, 3) uint8 array."""
    arr = frame.detach().cpu().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB frame, got shape {arr.shape} dtype {arr.dtype}")
    return np.ascontiguousarray(arr)


class FrameWriter:
    """Append RGB frames of one size; ``open_frame_writer`` finishes and renames the file.

    Subclasses implement ``_add`` and ``_finish``; frame sizes are checked here.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size: tuple[int, int] | None = None  # (H, W) of the incoming frames
        self.count = 0

    def append(self, frame: torch.Tensor | np.ndarray) -> None:
        """Add one (3, H, W) or (H, W, 3) uint8 frame."""
        arr = _hwc(frame)
        if self.size is None:
            self.size = arr.shape[:2]
        elif arr.shape[:2] != self.size:
            raise ValueError(f"frame {self.count} is {arr.shape[:2]}, earlier frames {self.size}")
        self._add(arr)
        self.count += 1

    def _add(self, arr: np.ndarray) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        """Release resources after a failure (the temporary file is removed by the caller)."""

    @property
    def written_size(self) -> tuple[int, int] | None:
        """(H, W) of the frames as stored in the file."""
        return self.size

    @property
    def stored_frames(self) -> int:
        """Frames the file will hold (a .png grid: its rows)."""
        return self.count


class _Mp4Writer(FrameWriter):
    """H.264 / yuv420p via imageio-ffmpeg; odd sides padded with one black row/column, never
    rescaled (``macro_block_size=1``), ``+faststart`` so browsers can play it while loading."""

    def __init__(self, path: Path, fps: float, quality: float = 7.0) -> None:
        super().__init__(path)
        self.fps = fps
        self.quality = quality
        self._gen = None

    def _add(self, arr: np.ndarray) -> None:
        import imageio_ffmpeg

        h, w = arr.shape[:2]
        eh, ew = even_size(h, w)
        if (eh, ew) != (h, w):
            arr = np.pad(arr, ((0, eh - h), (0, ew - w), (0, 0)))
        if self._gen is None:
            self._gen = imageio_ffmpeg.write_frames(
                str(self.path),
                (ew, eh),
                fps=float(self.fps),
                codec="libx264",
                pix_fmt_in="rgb24",
                pix_fmt_out="yuv420p",
                quality=self.quality,
                macro_block_size=1,
                ffmpeg_log_level="quiet",  # a failure is reported by _finish, in one line
                output_params=["-movflags", "+faststart"],
            )
            self._gen.send(None)  # start ffmpeg
        self._gen.send(np.ascontiguousarray(arr))

    def _finish(self) -> None:
        if self._gen is None:
            raise ValueError("no frames to write")
        self._gen.close()  # flushes and waits for ffmpeg
        self._gen = None
        # imageio-ffmpeg ignores ffmpeg's exit status: a full disk left an empty or cut file
        if not mp4_is_complete(self.path):
            raise OSError(errno.EIO, "ffmpeg did not write a complete video (is the disk full?)")

    def _abort(self) -> None:
        if self._gen is not None:
            with contextlib.suppress(Exception):
                self._gen.close()
            self._gen = None

    @property
    def written_size(self) -> tuple[int, int] | None:
        return None if self.size is None else even_size(*self.size)


def mp4_is_complete(path: str | Path) -> bool:
    """Whether ``path`` is a whole MP4 file: its top-level boxes (ISO/IEC 14496-12, 4.2: a
    32-bit size, a type, a 64-bit size when the first is 1, "to the end" when 0) tile the file
    exactly and include ``ftyp``, ``moov`` and ``mdat``. A cut or empty file fails."""
    path = Path(path)
    size = path.stat().st_size
    seen: set[bytes] = set()
    pos = 0
    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 8:
                return False
            length, kind = struct.unpack(">I4s", head[:8])
            if length == 1:
                if len(head) < 16:
                    return False
                (length,) = struct.unpack(">Q", head[8:16])
            elif length == 0:
                length = size - pos
            if length < 8:
                return False
            seen.add(kind)
            pos += length
    return pos == size and {b"ftyp", b"moov", b"mdat"} <= seen


class _GifWriter(FrameWriter):
    """Animated GIF via PIL (adaptive palette per frame, dithered, endless loop).

    GIF delays are whole centiseconds, so the frame rate is rounded to the nearest 10 ms.
    """

    def __init__(self, path: Path, fps: float) -> None:
        super().__init__(path)
        self.fps = fps
        self._frames: list[Image.Image] = []

    def _add(self, arr: np.ndarray) -> None:
        # A GIF frame has 256 colours. Median cut spends them where most pixels are, so the
        # small colour-wheel legend (every hue) was posterised to a few bands; Floyd-Steinberg
        # dithering against the same palette keeps its local average colours (3x3-mean error
        # in the legend 2.05 vs 2.99, over a whole flow panel 1.4 vs 3.6; tests/test_visualize.py)
        img = Image.fromarray(arr)
        palette = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        self._frames.append(img.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG))

    def _finish(self) -> None:
        if not self._frames:
            raise ValueError("no frames to write")
        duration = max(20, int(round(100.0 / self.fps)) * 10)  # ms; browsers clamp < 20 ms
        first, *rest = self._frames
        # disposal=1 and optimize=False keep every frame whole, one GIF frame per input frame
        buf = io.BytesIO()
        first.save(
            buf,
            format="GIF",
            save_all=True,
            append_images=rest,
            duration=duration,
            loop=0,
            optimize=False,
            disposal=1,
        )
        write_into(self.path, buf.getbuffer())


class _PngGridWriter(FrameWriter):
    """A single PNG holding ``rows`` frames sampled evenly over the clip, stacked vertically."""

    def __init__(self, path: Path, num_frames: int, rows: int) -> None:
        super().__init__(path)
        self.keep = set(grid_indices(num_frames, rows))
        self.num_frames = num_frames
        self._rows: list[np.ndarray] = []

    def _add(self, arr: np.ndarray) -> None:
        if self.count in self.keep:
            self._rows.append(arr)

    def _finish(self) -> None:
        if not self._rows:
            raise ValueError("no frames to write")
        h, w = self._rows[0].shape[:2]
        n = len(self._rows)
        grid = np.zeros((n * h + (n - 1) * GRID_GAP, w, 3), dtype=np.uint8)
        for i, row in enumerate(self._rows):
            grid[i * (h + GRID_GAP) : i * (h + GRID_GAP) + h] = row
        buf = io.BytesIO()
        Image.fromarray(grid).save(buf, format="PNG", optimize=True)
        write_into(self.path, buf.getbuffer())

    @property
    def written_size(self) -> tuple[int, int] | None:
        if self.size is None:
            return None
        n = len(self._rows)
        return n * self.size[0] + (n - 1) * GRID_GAP, self.size[1]

    @property
    def stored_frames(self) -> int:
        return len(self._rows)


@contextlib.contextmanager
def open_frame_writer(
    path: str | Path, *, fps: float, num_frames: int, grid_rows: int = 4
) -> Iterator[FrameWriter]:
    """Open a writer for ``path`` chosen by its extension; the file appears only on success.

    Args:
        path: target .mp4, .gif or .png file.
        fps: frames per second (.mp4, .gif).
        num_frames: how many frames will be appended (a .png grid samples from them).
        grid_rows: frames in a .png grid.

    Raises:
        ValueError: an unsupported extension, or no frame appended.
    """
    path = Path(path)
    kind = output_kind(path)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    with atomic_path(path) as tmp:
        writer: FrameWriter
        if kind == "mp4":
            writer = _Mp4Writer(tmp, fps)
        elif kind == "gif":
            writer = _GifWriter(tmp, fps)
        else:
            writer = _PngGridWriter(tmp, num_frames, grid_rows)
        try:
            yield writer
        except BaseException:
            writer._abort()
            raise
        writer._finish()
