"""Reading images from anything users pass: paths, PIL images, numpy arrays, tensors.

Every mode PIL can open is handled (grayscale, RGBA and transparent palettes composited on white, palette,
16-bit, CMYK) and EXIF orientation is applied, so the boxes are in the frame the user sees. This is the one
decoder of the package: the predictor, ``glip detect`` and the evaluation read images through
:func:`load_image`. Unreadable inputs, and files over the pixel limit, raise :class:`ImageError`.
"""

from __future__ import annotations

import math
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = str | Path | Image.Image | np.ndarray | torch.Tensor


#: default pixel limit of :func:`load_image` for files: twice PIL's decompression-bomb warning limit
#: (2 x 89,478,485 = the size at which PIL itself refuses a file), i.e. about 13,000 x 13,000 pixels, which
#: decodes to ~0.5 GB of RGB. Larger files raise :class:`ImageError` unless ``max_pixels`` is raised.
MAX_PIXELS: int = 2 * 89_478_485

# Image.open runs PIL's own bomb check against the global Image.MAX_IMAGE_PIXELS; it is lifted only while a
# header is read (under this lock, restored at once) so that our own, configurable limit decides.
_OPEN_LOCK = threading.Lock()


class ImageError(ValueError):
    """An input that is not a readable image; the message names it and says why."""


def _open_unchecked(path: Path) -> Image.Image:
    """``Image.open`` (header only) without PIL's global decompression-bomb limit."""
    with _OPEN_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_pixels(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"{path} has {width * height:,} pixels ({width}x{height}), over the limit of {max_pixels:,}: "
            "pass max_pixels=N (or max_pixels=None for no limit; glip detect: --max-pixels N) to read it"
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit: the full 0..65535 range maps to 0..255 (value / 257, as torchvision / OpenCV do), so
        # the result does not depend on the image's own maximum. Mode "I" (32-bit) holds 8-bit, 16-bit
        # or wider data: judged by its maximum.
        array = np.asarray(image, dtype=np.float64)
        top = float(array.max()) if array.size else 0.0
        if image.mode.startswith("I;16") or 255 < top <= 65535:
            array = array / 257.0
        elif top > 65535:
            array = array / top * 255.0
        image = Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8))
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(
            np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        )
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(
    source: Any, *, bgr: bool = False, max_pixels: int | None = MAX_PIXELS, exif_transpose: bool = True
) -> Image.Image:
    """Return an RGB PIL image.

    Args:
        source: a file path; a PIL image; an array HxWx3/4 (RGB, or BGR with ``bgr=True``) or HxW gray;
            a tensor CxHxW. Array / tensor values follow :func:`to_uint8`: uint8 as is, uint16 scaled,
            other integers in 0..255, floats in [0, 1]; NaN / inf and other dtypes are refused.
        bgr: the array / tensor holds BGR(A) channels (OpenCV's ``cv2.imread``): they are flipped to RGB.
            Files and PIL images carry their own channel order and are decoded as they are.
        max_pixels: files with more pixels (width x height) raise :class:`ImageError` before they are
            decoded (None: no limit). Default :data:`MAX_PIXELS`.
        exif_transpose: apply the EXIF orientation of files and PIL images (the frame a viewer shows).

    Raises:
        ImageError: missing / unreadable / corrupt files, files over ``max_pixels``, bad array shapes.
    """
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"image not found: {path}")
        if path.is_dir():
            raise ImageError(f"{path} is a directory, not an image")
        try:
            with _open_unchecked(path) as opened:
                _check_pixels(path, opened.width, opened.height, max_pixels)
                opened.load()
                image = (ImageOps.exif_transpose(opened) or opened) if exif_transpose else opened
                return _to_rgb(image).copy()
        except UnidentifiedImageError:
            raise ImageError(f"{path} is not an image file PIL can read") from None
        except ImageError:
            raise
        except Image.DecompressionBombError as exc:  # a plugin's own check while decoding (frames, tiles)
            raise ImageError(
                f"{path} is too large to decode: {exc}; pass max_pixels=N / --max-pixels N"
            ) from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"{path} is corrupt or truncated: {exc}") from None
    if isinstance(source, Image.Image):
        return _to_rgb((ImageOps.exif_transpose(source) or source) if exif_transpose else source)
    if isinstance(source, torch.Tensor):
        tensor = source.detach().cpu()
        if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
            raise ImageError(
                f"an image tensor must be (C, H, W) with C in 1, 3, 4; got {tuple(tensor.shape)}"
            )
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return load_image(tensor.permute(1, 2, 0).numpy(), bgr=bgr)
    if isinstance(source, np.ndarray):
        array = source
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            what = "BGR" if bgr else "RGB"
            raise ImageError(f"an image array must be HxW or HxWx3/4 ({what}); got shape {array.shape}")
        if bgr and array.ndim == 3:
            array = np.concatenate([array[:, :, 2::-1], array[:, :, 3:]], axis=2)
        array = to_uint8(array)
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise ImageError(f"empty image array of shape {array.shape}")
        return _to_rgb(Image.fromarray(np.ascontiguousarray(array)))
    raise ImageError(
        f"unsupported image type {type(source).__name__}: give a path, PIL image, array or tensor"
    )


# values of a float pixel tolerated above 1 (or below 0) and clipped: rounding of a [0, 1] image, not data
FLOAT_TOLERANCE = 1.0 / 255.0


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Pixel values -> uint8 by one explicit rule per dtype (never a guess from the data):

    * uint8: as is; uint16: 0..65535 -> 0..255 (``/ 257``, as for 16-bit files);
    * other integers: must lie in 0..255 (no wrap-around, no saturation);
    * floats: must be finite and in [0, 1] (``x 255``; up to :data:`FLOAT_TOLERANCE` outside is clipped),
      converted in bands of rows: the memory needed beside the input is the uint8 result plus ~20 MB;
    * bool, complex, object and other dtypes are refused.
    Anything else raises :class:`ImageError` saying what to pass instead.
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return np.round(array / 257.0).astype(np.uint8)
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise ImageError(
            f"unsupported image array dtype {array.dtype}: give uint8 (0..255), uint16 or floats in [0, 1]"
        )
    if array.size == 0:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ImageError(
                f"an integer image ({array.dtype}) must hold values in 0..255, got {low}..{high}: "
                "scale it to uint8 (or pass uint16 for 16-bit data)"
            )
        return array.astype(np.uint8)
    # floats: checked and converted in bands of rows, so a large image (a 20000 x 20000 float32 tensor is
    # 4.8 GB) needs only the uint8 result (1.2 GB) beside it, not float64 copies of the whole image
    rows = max(1, _BAND_VALUES // max(1, array[:1].size))
    bad, low, high = 0, math.inf, -math.inf
    for start in range(0, array.shape[0], rows):
        band = array[start : start + rows].astype(np.float64)
        finite = np.isfinite(band)
        if not finite.all():
            bad += int((~finite).sum())
        elif not bad:
            low, high = min(low, float(band.min())), max(high, float(band.max()))
    if bad:
        raise ImageError(f"the image holds {bad} NaN / infinite value(s): replace them before detecting")
    if low < -FLOAT_TOLERANCE or high > 1.0 + FLOAT_TOLERANCE:
        raise ImageError(
            f"a float image must hold values in [0, 1], got {low:g}..{high:g}: divide a 0..255 image by 255 "
            "(or pass it as uint8)"
        )
    out = np.empty(array.shape, dtype=np.uint8)
    for start in range(0, array.shape[0], rows):
        band = array[start : start + rows].astype(np.float64)
        band *= 255.0
        np.round(band, out=band)
        out[start : start + rows] = np.clip(band, 0, 255, out=band)
    return out


# float pixels converted per band of rows (~1 M values: 8 MB of float64 temporaries)
_BAND_VALUES = 1 << 20


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def expand_image_paths(items: list[str]) -> list[Path]:
    """Files as given, directories expanded to their image files (sorted)."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            paths.append(path)
    return paths
