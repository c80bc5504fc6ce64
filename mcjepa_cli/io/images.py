"""Image reading and writing shared by every dataset and command.

Frames are returned as RGB ``uint8`` tensors of shape (3, H, W) whatever the file holds (grey,
RGBA, palette, 16-bit); label maps (VOC, DAVIS palette PNGs) are read as *indices*, never as
colours. Every decoding failure becomes a ``UserError`` that names the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mcjepa_cli.errors import UserError
from mcjepa_cli.io.atomic import atomic_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp", ".tif", ".tiff")

# Pascal VOC colour map (also the palette of DAVIS annotations): index i -> RGB, built from
# the bits of i as in the VOC development kit's labelcolormap.
def voc_palette(n: int = 256) -> np.ndarray:
    """Return the Pascal VOC palette as an (n, 3) uint8 array."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise UserError(path, "file not found")
    try:
        img = Image.open(path)
        img.load()  # force the decode so truncated files fail here, not later
    except Image.DecompressionBombError as e:
        raise UserError(path, f"image too large to decode safely ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UserError(path, f"cannot decode image ({e.__class__.__name__}: {e})") from None
    return img


def read_image(path: str | Path) -> torch.Tensor:
    """Read an image file as an RGB uint8 tensor (3, H, W).

    Grey and palette images are expanded to RGB, RGBA drops its alpha channel, 16-bit images
    are scaled to 8 bits.
    """
    path = Path(path)
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        arr = np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        arr = np.repeat(arr[..., None], 3, axis=2)
    else:
        arr = np.array(img.convert("RGB"), dtype=np.uint8)  # writable copy for torch
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise UserError(path, f"expected a 2-D image, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def read_image_float(path: str | Path) -> torch.Tensor:
    """Read an image as float32 RGB in [0, 1], shape (3, H, W)."""
    return read_image(path).float().div_(255.0)


def read_label_png(path: str | Path) -> np.ndarray:
    """Read a label map (palette or grey PNG) as an (H, W) array of integer indices.

    Palette PNGs (VOC ``SegmentationClass``, DAVIS ``Annotations``) give their indices; grey
    PNGs (Cityscapes ``labelIds``, ADE20K) give their values. Colour images are refused.
    """
    path = Path(path)
    img = _open(path)
    if img.mode in ("P", "L"):
        return np.asarray(img, dtype=np.uint8).copy()
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        return np.asarray(img, dtype=np.int64).copy()
    raise UserError(path, f"expected a palette or grey label PNG, got mode {img.mode}")


def write_png(path: str | Path, image: np.ndarray | torch.Tensor) -> None:
    """Write an (H, W, 3) or (3, H, W) uint8 image as PNG, atomically."""
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    arr = np.ascontiguousarray(arr.astype(np.uint8))
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def write_palette_png(path: str | Path, indices: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write an (H, W) index map as an indexed (palette) PNG, atomically (VOC palette default)."""
    idx = np.asarray(indices)
    if idx.min(initial=0) < 0 or idx.max(initial=0) > 255:
        raise ValueError(f"palette indices must lie in [0, 255], got [{idx.min()}, {idx.max()}]")
    img = Image.fromarray(idx.astype(np.uint8), mode="P")
    pal = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    img.putpalette(pal.reshape(-1).tolist())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
