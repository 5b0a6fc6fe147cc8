"""Open an image file as an 8-bit RGB picture, or say exactly why it cannot be used.

:func:`load_image` decodes the whole file up front (a truncated file fails here, not later in a worker) and raises
:class:`~mmfw.data.errors.RecordError` with reason ``missing-image``, ``empty-image``, ``corrupt-image`` or
``image-too-large``. :func:`to_rgb` converts every other mode instead of failing:

* greyscale (``L``, ``1``), palette (``P``), ``CMYK``, ``YCbCr``...: Pillow's own conversion;
* with transparency (``RGBA``, ``LA``, ``PA``, a palette or greyscale image with a transparent colour): composited
  on white, as transformers' ``convert_to_rgb`` does (a plain ``convert("RGB")`` would expose whatever colour the
  transparent pixels happen to hold);
* 16-bit and 32-bit integer greyscale (``I;16``, ``I``): scaled to 8 bits (``value / 257``), not clipped, so a 16-bit
  scan does not turn white; 32-bit float (``F``): ``[0, 1]`` scaled to ``[0, 255]`` (values above 1 read as 8-bit).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmfw.data.errors import RecordError

__all__ = ["decode_image", "load_image", "to_rgb"]

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


def _to_8bit(image: Image.Image) -> Image.Image:
    arr = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        arr = arr * 255.0 if arr.size and np.nanmax(arr) <= 1.0 else arr
    elif image.mode.startswith("I;16") or (arr.size and arr.max() > 255):
        arr = arr / 257.0
    arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as an 8-bit RGB image (see the module docstring for how each mode is converted).

    Raises:
        RecordError: ``empty-image`` for a zero-sized image, ``corrupt-image`` for a mode Pillow cannot convert.
    """
    if image.width == 0 or image.height == 0:
        raise RecordError("empty-image", f"image has zero size {image.width}x{image.height}")
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    try:
        if image.mode in _HIGH_DEPTH_MODES:
            return _to_8bit(image).convert("RGB")
        if image.mode in _ALPHA_MODES or "transparency" in image.info:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")
    except (ValueError, OSError) as e:
        raise RecordError("corrupt-image", f"cannot convert a {image.mode!r} image to RGB: {e}") from e


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation says (a phone photo taken sideways is shown upright)."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # unreadable EXIF: keep the pixels as stored
        return image
    if orientation in (None, 1):
        return image
    turned = ImageOps.exif_transpose(image)
    return image if turned is None else turned


def load_image(path: str | Path) -> Image.Image:
    """Decode ``path`` completely and return it as RGB (see :func:`to_rgb`).

    Raises:
        RecordError: ``missing-image``, ``empty-image``, ``corrupt-image`` or ``image-too-large``; the message
            names the file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise RecordError("missing-image", f"image file not found: {str(path)!r}") from None
    except OSError as e:
        raise RecordError("missing-image", f"cannot access image {str(path)!r}: {e.strerror or e}") from None
    if path.is_dir():
        raise RecordError("missing-image", f"image path {str(path)!r} is a directory")
    if size == 0:
        raise RecordError("empty-image", f"image file {str(path)!r} is empty (0 bytes)")
    try:
        data = path.read_bytes()  # decoded from memory: no file handle outlives the call, no pixel copy
    except OSError as e:
        raise RecordError("missing-image", f"cannot read image {str(path)!r}: {e.strerror or e}") from None
    return decode_image(data, str(path))


def decode_image(data: bytes, name: str) -> Image.Image:
    """Decode image bytes (a file's, or a tar member's) as RGB; ``name`` is how errors name the image.

    Raises:
        RecordError: ``empty-image``, ``corrupt-image`` or ``image-too-large``.
    """
    if not data:
        raise RecordError("empty-image", f"image {name!r} is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return to_rgb(upright(image))
    except RecordError as e:
        raise RecordError(e.reason_code, f"{e.message} ({name!r})") from None
    except UnidentifiedImageError:
        raise RecordError("corrupt-image", f"cannot decode image {name!r}: not a format Pillow can read "
                                           f"({len(data)} bytes starting {data[:8]!r})") from None
    except Image.DecompressionBombError as e:
        raise RecordError("image-too-large", f"image {name!r}: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise RecordError("corrupt-image", f"cannot decode image {name!r}: {e}") from None
