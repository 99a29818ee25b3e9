"""Image conversions and the one definition of "resolution" used everywhere.

Resolution means the short side, as lllyasviel's annotators and controlnet_aux use it: an image is scaled
so its short side equals the resolution, keeping the aspect ratio, and both sides are rounded to
multiples of 64 (SD's latent grid needs multiples of 8; 64 matches the reference implementation).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from controlnet_core.errors import FieldError, shown

SIZE_MULTIPLE = 64
MAX_ASPECT_RATIO = 2.0


_EXIF_ORIENTATION = 0x0112


class ImageTooLargeError(FieldError):
    """An image over the server's limits (file size or pixel count), refused before decoding."""

    def __init__(self, problem: str) -> None:
        super().__init__(("image",), problem, name="")


def open_image(source: object, max_pixels: int, max_bytes: int | None = None) -> Image.Image:
    """A PIL image from a file path (or a PIL image / numpy array, returned as they are), checked.

    The pixel count is read from the file's header and refused above `max_pixels` before a single
    pixel is decoded: a 20 KB PNG can declare 13000x13000 pixels and need gigabytes once decoded.
    Files over `max_bytes` are refused unread. The EXIF orientation of photos is applied.
    """
    if isinstance(source, (str, Path)):
        image = open_header(source, max_pixels, max_bytes)
        try:
            # Only EXIF read with the header: PNG's getexif() decodes the pixels to look further.
            if "exif" not in image.info or image.getexif().get(_EXIF_ORIENTATION, 1) == 1:
                return image  # upright: stays undecoded (exif_transpose would copy it)
            return ImageOps.exif_transpose(image)
        except Exception:  # a broken EXIF block: keep the pixels as stored
            return image
    if isinstance(source, Image.Image):
        check_pixels(source.size, max_pixels)
    elif isinstance(source, np.ndarray) and source.ndim >= 2:
        check_pixels((source.shape[1], source.shape[0]), max_pixels)
    return source


def open_header(path: str | Path, max_pixels: int, max_bytes: int | None = None) -> Image.Image:
    """The image file at `path` opened with its header read only (pixels not decoded), refused
    (ValueError, ImageTooLargeError) when it is no image, or over `max_bytes` or `max_pixels`."""
    try:
        size = os.path.getsize(path)
    except OSError:
        raise ValueError("the image file could not be read; upload it again") from None
    if max_bytes is not None and size > max_bytes:
        raise ImageTooLargeError(
            f"image file is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:g} MB"
        )
    try:
        image = Image.open(path)
    except Image.DecompressionBombError:
        raise ImageTooLargeError(_too_many_pixels(None, max_pixels)) from None
    except (OSError, SyntaxError, ValueError):
        raise ValueError(
            "the file is not an image that can be read (PNG, JPEG, WebP, BMP, TIFF…)"
        ) from None
    try:
        check_pixels(image.size, max_pixels)
    except ImageTooLargeError:
        image.close()
        raise
    return image


def check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    """ImageTooLargeError when an image of `size` = (w, h) has more than `max_pixels` pixels."""
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLargeError(_too_many_pixels(size, max_pixels))


def _too_many_pixels(size: tuple[int, int] | None, max_pixels: int) -> str:
    declared = f"{size[0]}x{size[1]} = {size[0] * size[1] / 1e6:.1f} MP" if size else "too large"
    return (
        f"image is {declared}; the limit is {max_pixels / 1e6:g} megapixels: "
        "scale it down and upload it again"
    )


def to_rgb_array(image: object, over_white: bool = True) -> np.ndarray:
    """An HxWx3 uint8 RGB array from a PIL image or a numpy array, whatever its mode or depth.

    RGBA is composited over white, which is what a transparent upload or canvas looks like on screen;
    with `over_white=False` the alpha channel is dropped instead, keeping the colours stored under
    transparent pixels (an uploaded control map's background).
    16-bit images (depth and normal maps often are) are scaled to 8 bits rather than clipped; floats
    in [0, 1] are scaled by 255; CMYK and other colour spaces are converted to RGB.
    """
    if image is None:
        raise ValueError("image is required: got None")
    if isinstance(image, Image.Image):
        array = _pil_to_array(image)
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise ValueError(f"image must be a PIL image or a numpy array; got {shown(image)}")
    shape = array.shape
    array = _to_uint8(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be HxW, HxWx3 or HxWx4; got shape {shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.shape[2] == 4 and not over_white:
        array = array[..., :3]
    elif array.shape[2] == 4:
        alpha = array[..., 3:4].astype(np.float32) / 255.0
        array = np.rint(array[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if array.shape[0] < 8 or array.shape[1] < 8:
        raise ValueError(
            f"image is too small: {array.shape[1]}x{array.shape[0]} (need at least 8x8)"
        )
    return np.ascontiguousarray(array)


# PIL modes whose pixels are single numbers wider than 8 bits.
_WIDE_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """The pixels of a PIL image as gray, RGB or RGBA; ValueError if the file cannot be decoded."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"could not read the image ({error}); is the file complete?") from None
    if image.mode in _WIDE_MODES:
        return np.asarray(image)
    if image.mode in ("RGBA", "LA", "P", "PA", "RGBa", "La") or "transparency" in image.info:
        return np.asarray(image.convert("RGBA"))
    if image.mode == "L":
        return np.asarray(image)
    return np.asarray(image.convert("RGB"))


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """`array` as uint8: 16-bit ranges scaled down, [0, 1] floats scaled up, the rest clipped."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        if array.dtype.itemsize == 2 or (array.size and array.max() > 255):
            # 16-bit data (a uint16 array, or PIL's 32-bit "I" mode that 16-bit PNGs open as).
            return np.rint(np.clip(array, 0, 65535) / 257.0).astype(np.uint8)
        return np.clip(array, 0, 255).astype(np.uint8)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"image pixels must be numbers; got dtype {array.dtype}")
    array = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if array.size and array.max() <= 1.0:
        array = array * 255.0
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def target_size(
    width: int, height: int, resolution: int, multiple: int = SIZE_MULTIPLE
) -> tuple[int, int]:
    """(width, height) for an image of the given size scaled so its short side is `resolution`.

    Both sides are rounded to `multiple`; the long side is capped at MAX_ASPECT_RATIO times the short
    side (see `fit_image`, which centre-crops extreme panoramas instead of squashing them).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive; got {width}x{height}")
    scale = resolution / min(width, height)
    new_w = max(multiple, int(round(width * scale / multiple)) * multiple)
    new_h = max(multiple, int(round(height * scale / multiple)) * multiple)
    cap = int(resolution * MAX_ASPECT_RATIO) // multiple * multiple
    return min(new_w, cap), min(new_h, cap)


# The sizes SDXL was trained at: aspect buckets of about 1024² pixels (landscape; portrait swaps).
SDXL_BUCKETS = ((1024, 1024), (1152, 896), (1216, 832), (1344, 768), (1536, 640))
SDXL_NATIVE = 1024


def sdxl_size(width: int, height: int, resolution: int, multiple: int = 32) -> tuple[int, int]:
    """(width, height) for an image on SDXL: the trained bucket nearest its aspect ratio, scaled
    so its area is about `resolution`² (at 1024, the bucket itself); `fit_image` crops the rest.
    Sides are multiples of 32 (SDXL's UNet halves its latents twice), so small sizes keep their
    aspect too.

    SDXL composes well only near the sizes it was trained at: a short side of 1024 on a 4:3 image
    (1365×1024) would ask for 1.4× its pixel count and repeat subjects.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive; got {width}x{height}")
    ratio = max(width, height) / min(width, height)
    long, short = min(SDXL_BUCKETS, key=lambda bucket: abs(np.log(bucket[0] / bucket[1] / ratio)))
    scale = resolution / SDXL_NATIVE
    long = max(multiple, int(long * scale / multiple + 0.5) * multiple)
    short = max(multiple, int(short * scale / multiple + 0.5) * multiple)
    return (long, short) if width >= height else (short, long)


def fit_image(
    array: np.ndarray, size: tuple[int, int], resample: int = Image.LANCZOS
) -> np.ndarray:
    """Resize (centre-cropping first if the aspect ratio differs) an RGB array to `size` = (w, h)."""
    target_w, target_h = size
    height, width = array.shape[:2]
    if (width, height) == (target_w, target_h):
        return array
    target_ratio = target_w / target_h
    ratio = width / height
    if abs(ratio - target_ratio) > 1e-3:
        if ratio > target_ratio:
            crop_w = max(1, int(round(height * target_ratio)))
            left = (width - crop_w) // 2
            array = array[:, left : left + crop_w]
        else:
            crop_h = max(1, int(round(width / target_ratio)))
            top = (height - crop_h) // 2
            array = array[top : top + crop_h]
    return np.asarray(Image.fromarray(array).resize((target_w, target_h), resample))


def resize_short_side(
    array: np.ndarray, resolution: int, multiple: int = SIZE_MULTIPLE
) -> np.ndarray:
    """`array` scaled so its short side is `resolution`, sides rounded to `multiple`."""
    height, width = array.shape[:2]
    size = target_size(width, height, resolution, multiple)
    resample = Image.LANCZOS if resolution >= min(width, height) else Image.BOX
    return fit_image(array, size, resample)


def image_sha1(array: np.ndarray) -> str:
    """A content hash of an array (shape + bytes), for caches keyed by image."""
    import hashlib

    digest = hashlib.sha1(str(array.shape).encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
