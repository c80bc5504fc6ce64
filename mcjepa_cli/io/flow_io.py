"""Optical-flow file IO: Middlebury ``.flo``, KITTI 16-bit PNG and PFM (DESIGN.md section 3.1).

Every flow is returned as a float32 array of shape (H, W, 2) holding (u, v) = (x, y)
displacements in pixels, with a boolean validity mask of shape (H, W) where the format has one.
Values at invalid pixels are returned as stored in the file (``.flo`` unknowns stay ``1e9+``).
Readers never trust a header: a bad magic, a truncated payload or a size mismatch raises a
``UserError`` that names the file. A header that claims a flow larger than ``MAX_FLOW_SIDE``
pixels a side or ``MAX_FLOW_PIXELS`` pixels is refused before anything is allocated, and a
``.flo``/PFM header is checked against the file's size before its payload is read, so a
corrupt or hostile header cannot exhaust memory. Writers are atomic (temporary file + rename).

Formats:

* ``.flo`` (Middlebury): ``b"PIEH"`` (the float 202021.25), int32 width, int32 height, then
  float32 (u, v) interleaved row by row, all little-endian. A pixel is *unknown* when a
  component is non-finite or has ``|value| > 1e9``.
* KITTI PNG: 16-bit RGB; ``u = (R - 2^15) / 64``, ``v = (G - 2^15) / 64``, ``B`` = valid (0/1).
  Values lie on a 1/64 px grid within [-512, 512).
* PFM: header ``PF`` (3 channels) or ``Pf`` (1 channel), ``width height``, then a scale whose
  sign gives the byte order (negative = little-endian); float32 rows stored bottom-to-top.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import png
import torch

from mcjepa_cli.errors import UserError
from mcjepa_cli.io.atomic import atomic_write_bytes

FLO_MAGIC = b"PIEH"  # the little-endian bytes of the float32 202021.25
FLO_UNKNOWN_THRESHOLD = 1e9  # |component| above this marks an unknown .flo pixel
FLO_UNKNOWN_VALUE = 1e10  # what write_flo stores at invalid pixels
KITTI_OFFSET = 2**15
KITTI_SCALE = 64.0
FLOW_EXTENSIONS = (".flo", ".png", ".pfm")

_PFM_HEADER = re.compile(rb"\A(PF|Pf)\s+(\d+)\s+(\d+)\s+([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s")
_PFM_HEADER_BYTES = 256  # the header pattern is matched within the first bytes only

# The largest flow a file may claim. Real data is far inside (Sintel 1024x436, KITTI 1242x375,
# HD1K 2560x1080, a 4K frame 4096x2160, an 8K frame 7680x4320 = 33 Mpx); a header beyond
# either bound is corrupt or hostile and is refused before any allocation. At the bound a .flo
# holds 512 MiB and decoding needs a few GiB.
MAX_FLOW_SIDE = 16384  # pixels, width or height
MAX_FLOW_PIXELS = 8192 * 8192  # width x height (67,108,864)
# A KITTI PNG within those bounds holds at most 6 bytes a pixel before compression (deflate
# adds a fraction of a percent to incompressible data): anything much larger is not read.
_MAX_PNG_FILE_BYTES = 8 * MAX_FLOW_PIXELS  # 512 MiB


def _check_claimed_size(path: Path, w: int, h: int, what: str) -> None:
    """Refuse a header's ``w`` x ``h`` beyond ``MAX_FLOW_SIDE`` / ``MAX_FLOW_PIXELS``."""
    if w < 1 or h < 1:
        raise UserError(path, f"corrupt {what} header: width {w}, height {h}")
    if max(w, h) > MAX_FLOW_SIDE or w * h > MAX_FLOW_PIXELS:
        raise UserError(
            path,
            f"{what} header claims {w}x{h} pixels (width x height), beyond the limit of "
            f"{MAX_FLOW_SIDE} pixels a side and {MAX_FLOW_PIXELS:,} pixels for a flow file; "
            "refused before allocating it (corrupt, or not a flow file)",
        )


def _file_size(path: Path) -> int:
    if not path.is_file():
        raise UserError(path, "flow file not found")
    try:
        return path.stat().st_size
    except OSError as e:
        raise UserError(path, f"cannot read file ({e.strerror or e})") from None


def _read_bytes(path: Path, limit: int | None = None) -> bytes:
    """The file's bytes (at most ``limit`` of them)."""
    if not path.is_file():
        raise UserError(path, "flow file not found")
    try:
        if limit is None:
            return path.read_bytes()
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError as e:
        raise UserError(path, f"cannot read file ({e.strerror or e})") from None


def flo_valid(flow: np.ndarray) -> np.ndarray:
    """Validity of a ``.flo``/PFM flow: every component finite and at most 1e9 in magnitude.

    Args:
        flow: (H, W, 2) array.

    Returns:
        (H, W) bool array, True where the pixel is known.
    """
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(flow) & (np.abs(flow) <= FLO_UNKNOWN_THRESHOLD)
    return ok.all(axis=-1)


def _check_flow_array(flow: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    arr = flow.detach().cpu().numpy() if isinstance(flow, torch.Tensor) else np.asarray(flow)
    if arr.ndim != 3 or arr.shape[-1] != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{what}: expected a flow of shape (H, W, 2), got {arr.shape}")
    return arr


def _check_valid_array(
    valid: np.ndarray | torch.Tensor | None, shape: tuple[int, int]
) -> np.ndarray:
    if valid is None:
        return np.ones(shape, dtype=bool)
    arr = valid.detach().cpu().numpy() if isinstance(valid, torch.Tensor) else np.asarray(valid)
    if arr.shape != shape:
        raise ValueError(f"valid mask: expected shape {shape}, got {arr.shape}")
    return arr.astype(bool)


# ----------------------------------------------------------------------------------- .flo
def read_flo(path: str | Path) -> np.ndarray:
    """Read a Middlebury ``.flo`` file.

    Args:
        path: the file.

    Returns:
        (H, W, 2) float32 flow, values as stored (unknown pixels keep their ``1e9+`` values;
        use ``flo_valid`` or ``read_flow`` for the mask).

    Raises:
        UserError: missing file, wrong magic, bad dimensions, a size beyond ``MAX_FLOW_SIDE`` /
            ``MAX_FLOW_PIXELS``, truncated or oversized payload.
    """
    path = Path(path)
    head = _read_bytes(path, 12)
    if len(head) < 12:
        raise UserError(path, f"not a .flo file: {len(head)} bytes, expected a 12-byte header")
    if head[:4] != FLO_MAGIC:
        raise UserError(path, f"not a .flo file: magic {head[:4]!r}, expected {FLO_MAGIC!r}")
    w, h = struct.unpack_from("<ii", head, 4)
    _check_claimed_size(path, w, h, ".flo")
    expected = 12 + 8 * w * h
    size = _file_size(path)  # checked before the payload is read
    if size != expected:
        raise UserError(
            path,
            f"corrupt .flo file: {size} bytes, expected {expected} for {w}x{h} "
            f"({'truncated' if size < expected else 'trailing data'})",
        )
    data = _read_bytes(path)
    if len(data) != expected:  # changed while being read
        raise UserError(path, f"corrupt .flo file: {len(data)} bytes, expected {expected}")
    flow = np.frombuffer(data, dtype="<f4", count=2 * w * h, offset=12)
    return flow.reshape(h, w, 2).astype(np.float32)  # native byte order, writable copy


def write_flo(
    path: str | Path,
    flow: np.ndarray | torch.Tensor,
    valid: np.ndarray | torch.Tensor | None = None,
) -> None:
    """Write a flow as a Middlebury ``.flo`` file, atomically.

    Args:
        path: destination.
        flow: (H, W, 2) flow in pixels (converted to float32).
        valid: optional (H, W) bool mask; invalid pixels are stored as the unknown value 1e10.
    """
    arr = _check_flow_array(flow, "write_flo").astype(np.float32, copy=True)
    h, w = arr.shape[:2]
    if valid is not None:
        arr[~_check_valid_array(valid, (h, w))] = FLO_UNKNOWN_VALUE
    header = FLO_MAGIC + np.array([w, h], dtype="<i4").tobytes()
    atomic_write_bytes(path, header + arr.astype("<f4").tobytes())


# ----------------------------------------------------------------------------- KITTI PNG
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + payload))
    return struct.pack(">I", len(payload)) + kind + payload + crc


def _checked_kitti_png(path: Path, data: bytes) -> tuple[bytes, int, int]:
    """Validate a 16-bit RGB PNG completely; return a minimal copy (IHDR, IDAT, IEND), H, W.

    libpng, as wrapped by ``torchvision.io.decode_png``, can crash the process on some corrupt
    streams (observed: "bad adaptive filter value" followed by a segfault), so every chunk's
    CRC, the header, the exact decompressed size and every row's filter byte are checked here
    first, and ancillary chunks are dropped before the bytes reach the decoder.
    """
    if len(data) < 8 or data[:8] != _PNG_SIGNATURE:
        raise UserError(path, "not a PNG file (expected a 16-bit KITTI flow PNG)")
    pos, ihdr, idat, ended = 8, None, [], False
    while pos < len(data):
        if pos + 12 > len(data):
            raise UserError(path, f"corrupt PNG: truncated chunk at byte {pos}")
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise UserError(path, f"corrupt PNG: truncated {kind!r} chunk at byte {pos}")
        payload = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if zlib.crc32(kind + payload) != crc:
            raise UserError(path, f"corrupt PNG: CRC mismatch in {kind!r} chunk at byte {pos}")
        if ihdr is None and kind != b"IHDR":
            raise UserError(path, "corrupt PNG: the first chunk is not IHDR")
        if kind == b"IHDR":
            if ihdr is not None or length != 13:
                raise UserError(path, "corrupt PNG: bad IHDR chunk")
            ihdr = payload
        elif kind == b"IDAT":
            idat.append(payload)
        elif kind == b"IEND":
            ended = True
            break
        pos = end
    if ihdr is None or not idat or not ended:
        raise UserError(path, "corrupt PNG: missing IHDR, IDAT or IEND chunk")
    w, h, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", ihdr)
    if depth != 16 or colour != 2:
        raise UserError(
            path,
            f"expected a 16-bit RGB KITTI flow PNG, got bit depth {depth}, colour type {colour}",
        )
    _check_claimed_size(path, w, h, "PNG")  # before anything is decompressed
    if compression or filtering or interlace > 1:
        raise UserError(
            path, f"corrupt PNG header: {w}x{h}, methods {compression}/{filtering}/{interlace}"
        )
    if interlace:
        raise UserError(path, "interlaced PNG: expected a non-interlaced KITTI flow PNG")
    stride = 1 + 6 * w  # filter byte + 3 channels x 2 bytes
    expected = stride * h
    stream = b"".join(idat)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(stream, expected + 1)
    except zlib.error as e:
        raise UserError(path, f"corrupt PNG: image data does not decompress ({e})") from None
    if len(raw) != expected or not inflater.eof:
        raise UserError(
            path, f"corrupt PNG: image data holds {len(raw)}+ bytes, expected {expected}"
        )
    filters = np.frombuffer(raw, dtype=np.uint8)[::stride]
    if filters.max(initial=0) > 4:
        raise UserError(path, f"corrupt PNG: row filter type {int(filters.max())}, expected 0-4")
    chunks = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", stream) + _png_chunk(b"IEND", b"")
    clean = _PNG_SIGNATURE + chunks
    return clean, h, w


def _decode_rgb16(path: Path, clean: bytes, h: int, w: int) -> np.ndarray:
    """Decode a validated 16-bit RGB PNG to an (H, W, 3) int32 array.

    ``torchvision.io.decode_png(..., ImageReadMode.UNCHANGED)`` (libpng, fast) is used where
    torchvision still ships it (deprecated since 0.29); pypng (pure Python, ~10x slower) is the
    fallback.
    """
    try:
        from torchvision.io import ImageReadMode, decode_png
    except ImportError:
        return _decode_rgb16_pypng(path, clean, h, w)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision >= 0.29 warns
            img = decode_png(torch.frombuffer(bytearray(clean), dtype=torch.uint8),
                             ImageReadMode.UNCHANGED)
    except (RuntimeError, ValueError) as e:
        msg = " ".join(str(e).split()[-8:])
        raise UserError(path, f"cannot decode PNG ({msg})") from None
    if img.dtype != torch.uint16 or tuple(img.shape) != (3, h, w):
        raise UserError(path, f"expected a 16-bit RGB PNG, decoded {img.dtype} {tuple(img.shape)}")
    return img.to(torch.int32).permute(1, 2, 0).numpy()


def _decode_rgb16_pypng(path: Path, clean: bytes, h: int, w: int) -> np.ndarray:
    try:
        _, _, rows, _ = png.Reader(bytes=clean).read()
        arr = np.vstack([np.asarray(r, dtype=np.int32) for r in rows])
    except (png.Error, ValueError, zlib.error) as e:
        raise UserError(path, f"cannot decode PNG ({e.__class__.__name__}: {e})") from None
    if arr.shape != (h, 3 * w):
        raise UserError(path, f"expected {h} rows of {3 * w} samples, decoded {arr.shape}")
    return arr.reshape(h, w, 3)


def read_kitti_png(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a KITTI flow PNG (16-bit RGB: R = u, G = v, B = valid; flow = (I - 2^15) / 64).

    PIL and plain imageio decode 16-bit PNGs as 8 bits; the file is validated in full here,
    then decoded keeping all 16 bits (see ``_decode_rgb16``).

    Args:
        path: the file.

    Returns:
        ``(flow, valid)``: (H, W, 2) float32 flow (as stored at every pixel, invalid ones
        included) and (H, W) bool validity.

    Raises:
        UserError: missing file, not a PNG, corrupt, not 16-bit RGB, a size beyond
            ``MAX_FLOW_SIDE`` / ``MAX_FLOW_PIXELS``.
    """
    path = Path(path)
    size = _file_size(path)
    if size > _MAX_PNG_FILE_BYTES:
        raise UserError(path, f"PNG file of {size:,} bytes, more than a flow PNG within the size "
                        f"limit can hold ({_MAX_PNG_FILE_BYTES:,}); refused before reading it")
    clean, h, w = _checked_kitti_png(path, _read_bytes(path))
    arr = _decode_rgb16(path, clean, h, w)  # (H, W, 3) in [0, 65535]
    flow = ((arr[..., :2] - KITTI_OFFSET) / KITTI_SCALE).astype(np.float32)
    valid = arr[..., 2] > 0
    return flow, valid


def write_kitti_png(
    path: str | Path,
    flow: np.ndarray | torch.Tensor,
    valid: np.ndarray | torch.Tensor | None = None,
) -> None:
    """Write a flow as a KITTI 16-bit PNG, atomically (written with pypng).

    Values are rounded to the 1/64 px grid and clipped to the representable range
    [-512, 512 - 1/64]. Non-finite values are stored as zero flow and marked invalid.

    Args:
        path: destination.
        flow: (H, W, 2) flow in pixels.
        valid: optional (H, W) bool mask (default: every pixel valid).
    """
    arr = _check_flow_array(flow, "write_kitti_png").astype(np.float64)
    h, w = arr.shape[:2]
    ok = _check_valid_array(valid, (h, w)) & np.isfinite(arr).all(axis=-1)
    arr = np.where(np.isfinite(arr), arr, 0.0)
    q = np.clip(np.round(arr * KITTI_SCALE) + KITTI_OFFSET, 0, 65535).astype(np.uint16)
    out = np.empty((h, w, 3), dtype=np.uint16)
    out[..., :2] = q
    out[..., 2] = ok.astype(np.uint16)
    writer = png.Writer(width=w, height=h, greyscale=False, bitdepth=16)
    buf = io.BytesIO()  # encoded in memory: every byte then goes through the atomic writer
    writer.write(buf, out.reshape(h, w * 3))
    atomic_write_bytes(path, buf.getbuffer())


# ----------------------------------------------------------------------------------- PFM
def read_pfm(path: str | Path) -> np.ndarray:
    """Read a PFM file (``PF`` colour or ``Pf`` grey; the scale's sign gives the byte order).

    Args:
        path: the file.

    Returns:
        (H, W, C) float32 array with C = 3 for ``PF`` and 1 for ``Pf``, top row first
        (PFM stores rows bottom-to-top).

    Raises:
        UserError: missing file, bad header, zero/non-finite scale, a size beyond
            ``MAX_FLOW_SIDE`` / ``MAX_FLOW_PIXELS``, truncated or oversized data.
    """
    path = Path(path)
    head = _read_bytes(path, _PFM_HEADER_BYTES)
    m = _PFM_HEADER.match(head)
    if m is None:
        raise UserError(
            path, "not a PFM file: expected a 'PF' or 'Pf' header, width, height, scale"
        )
    channels = 3 if m.group(1) == b"PF" else 1
    w, h = int(m.group(2)), int(m.group(3))
    scale = float(m.group(4))  # the pattern only admits decimal numbers
    _check_claimed_size(path, w, h, "PFM")
    if scale == 0.0 or not np.isfinite(scale):
        raise UserError(
            path, f"corrupt PFM header: scale {scale} (its sign must give the byte order)"
        )
    offset = m.end()
    expected = offset + 4 * w * h * channels
    size = _file_size(path)  # checked before the payload is read
    if size != expected:
        raise UserError(
            path,
            f"corrupt PFM file: {size} bytes, expected {expected} for {w}x{h}x{channels} "
            f"({'truncated' if size < expected else 'trailing data'})",
        )
    data = _read_bytes(path)
    if len(data) != expected:  # changed while being read
        raise UserError(path, f"corrupt PFM file: {len(data)} bytes, expected {expected}")
    dtype = "<f4" if scale < 0 else ">f4"
    arr = np.frombuffer(data, dtype=dtype, count=w * h * channels, offset=offset)
    arr = arr.reshape(h, w, channels)[::-1]  # rows are stored bottom-to-top
    return np.ascontiguousarray(arr, dtype=np.float32)


def write_pfm(path: str | Path, array: np.ndarray | torch.Tensor) -> None:
    """Write a float array as little-endian PFM, atomically.

    Args:
        path: destination.
        array: (H, W) or (H, W, 1) -> ``Pf``; (H, W, 3) -> ``PF``; a flow (H, W, 2) is written
            as ``PF`` with a zero third channel (the FlyingThings3D convention).
    """
    arr = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(
            f"write_pfm: expected (H, W), (H, W, 1), (H, W, 2) or (H, W, 3), got {arr.shape}"
        )
    if arr.shape[-1] == 2:
        arr = np.concatenate([arr, np.zeros_like(arr[..., :1])], axis=-1)
    h, w, c = arr.shape
    header = f"{'PF' if c == 3 else 'Pf'}\n{w} {h}\n-1.0\n".encode("ascii")
    body = np.ascontiguousarray(arr[::-1], dtype="<f4").tobytes()  # bottom row first
    atomic_write_bytes(path, header + body)


# ---------------------------------------------------------------------------- dispatching
def read_flow(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read any supported flow file, dispatching on its extension.

    ``.flo`` and ``.pfm`` get their validity from their values (see ``flo_valid``); a PFM's
    first two channels are the flow. ``.png`` is a KITTI flow PNG with its valid channel.

    Args:
        path: a ``.flo``, ``.png`` (KITTI) or ``.pfm`` file.

    Returns:
        ``(flow, valid)``: (H, W, 2) float32 and (H, W) bool.

    Raises:
        UserError: unknown extension or an unreadable/corrupt file.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".flo":
        flow = read_flo(path)
        return flow, flo_valid(flow)
    if ext == ".png":
        return read_kitti_png(path)
    if ext == ".pfm":
        arr = read_pfm(path)
        if arr.shape[-1] < 2:
            raise UserError(
                path, "expected a 3-channel PFM ('PF') holding a flow, got a 1-channel 'Pf'"
            )
        flow = np.ascontiguousarray(arr[..., :2])
        return flow, flo_valid(flow)
    raise UserError(
        path, f"unknown flow file extension {ext!r}, expected one of {', '.join(FLOW_EXTENSIONS)}"
    )


def write_flow(
    path: str | Path,
    flow: np.ndarray | torch.Tensor,
    valid: np.ndarray | torch.Tensor | None = None,
) -> None:
    """Write a flow in the format given by the extension (``.flo``, ``.png`` KITTI, ``.pfm``).

    For ``.pfm``, invalid pixels are stored as NaN (PFM has no validity channel).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".flo":
        write_flo(path, flow, valid)
    elif ext == ".png":
        write_kitti_png(path, flow, valid)
    elif ext == ".pfm":
        arr = _check_flow_array(flow, "write_flow").astype(np.float32, copy=True)
        if valid is not None:
            arr[~_check_valid_array(valid, arr.shape[:2])] = np.nan
        write_pfm(path, arr)
    else:
        raise ValueError(f"unknown flow file extension {ext!r}, expected one of {FLOW_EXTENSIONS}")


__all__ = [
    "FLOW_EXTENSIONS",
    "MAX_FLOW_PIXELS",
    "MAX_FLOW_SIDE",
    "flo_valid",
    "read_flo",
    "read_flow",
    "read_kitti_png",
    "read_pfm",
    "write_flo",
    "write_flow",
    "write_kitti_png",
    "write_pfm",
]
