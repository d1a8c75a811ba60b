"""Image -> model input array, exactly as the spec says. Used by train, client and server."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from contract.spec import ModelSpec

# Pillow's own guard raises above 2x this; we refuse anything above it outright.
MAX_IMAGE_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


class ImageError(ValueError):
    """Bytes or a file that cannot be turned into a model input."""


def load_image(source: Image.Image | bytes | str | Path, fits: int | None = None) -> Image.Image:
    """Decode an image fully (so truncation is caught here, not later) and apply EXIF rotation.

    With `fits`, a JPEG at least twice that size on both sides is decoded at a reduced scale
    in the DCT domain (libjpeg's 1/2, 1/4, 1/8; both sides stay >= fits): several times
    faster for photos much larger than the model input, and as good a start for the resize.
    """
    if isinstance(source, Image.Image):
        return source
    what = str(source) if isinstance(source, str | Path) else "image bytes"
    if isinstance(source, bytes | bytearray | memoryview) and len(source) == 0:
        raise ImageError("empty image bytes")
    try:
        if isinstance(source, str | Path):
            img = Image.open(source)
        else:
            img = Image.open(io.BytesIO(bytes(source)))
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise ImageError(
                f"{what}: {img.width}x{img.height} exceeds {MAX_IMAGE_PIXELS} pixels "
                "(possible decompression bomb)"
            )
        if fits and img.format == "JPEG" and min(img.size) >= 2 * fits:
            img.draft(img.mode, (fits, fits))
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        return img
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{what}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{what}: is a directory, not an image") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{what}: too many pixels (possible decompression bomb)") from None
    except UnidentifiedImageError as e:
        raise ImageError(f"{what}: not a readable image ({e.__class__.__name__})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{what}: corrupt or truncated image ({e})") from None


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # PIL clips 16/32-bit ints to 255 when converting to L; scale the range instead.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8))
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on black: the background that transparent pixels of a saved tensor had.
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return img if img.mode == mode else img.convert(mode)


def _resize(img: Image.Image, spec: ModelSpec) -> Image.Image:
    resample = _RESAMPLE[spec.interpolation]
    if spec.resize_policy == "resize_center_crop":
        short = round(spec.resize_scale * max(spec.height, spec.width))
        w, h = img.size
        scale = short / min(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
        left = (img.width - spec.width) // 2
        top = (img.height - spec.height) // 2
        return img.crop((left, top, left + spec.width, top + spec.height))
    if img.size != (spec.width, spec.height):
        img = img.resize((spec.width, spec.height), resample)
    return img


def _chw(source: Image.Image | bytes | str | Path, spec: ModelSpec) -> np.ndarray:
    """The decoded, converted, resized image as a uint8 (C, H, W) view of its HWC pixels."""
    fits = round(spec.resize_scale * max(spec.height, spec.width))  # the resize's input side
    img = _resize(_to_mode(load_image(source, fits), spec.color_mode), spec)
    array = np.asarray(img)  # uint8, H x W (L) or H x W x 3 (RGB)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def pixels(source: Image.Image | bytes | str | Path, spec: ModelSpec) -> np.ndarray:
    """Return the image as contiguous uint8 (channels, height, width), not yet normalised."""
    return np.ascontiguousarray(_chw(source, spec))


def normalize(pixels: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """uint8 pixels (..., C, H, W) -> float32 (x / 255 - mean) / std, as
    x * (1 / (255 std)) - mean / std: one conversion, then scale and shift in place. A served
    model that takes uint8 runs these very float32 operations first (optimize.export)."""
    out = np.empty(pixels.shape, dtype=np.float32)
    out[...] = pixels
    scale, shift = scale_shift(spec)
    out *= scale
    out -= shift
    return out


def preprocess(source: Image.Image | bytes | str | Path, spec: ModelSpec) -> np.ndarray:
    """Return a float32 array of shape (channels, height, width), normalized per the spec."""
    return normalize(_chw(source, spec), spec)  # the strided view: one copy, not two


# What a served model takes, by the spec's dtype: normalised floats, or the pixels when the
# model normalises them itself (4x fewer bytes through the server).
MODEL_INPUTS = {"float32": preprocess, "uint8": pixels}


def model_input(source: Image.Image | bytes | str | Path, spec: ModelSpec) -> np.ndarray:
    """The array a model with this spec takes for one image (its dtype is the spec's)."""
    return MODEL_INPUTS[spec.dtype](source, spec)


def scale_shift(spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float32 1 / (255 std) and mean / std, shaped (C, 1, 1)."""
    return _scale_shift(tuple(spec.mean), tuple(spec.std))


@functools.lru_cache(maxsize=16)
def _scale_shift(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float32 1 / (255 std) and mean / std, made once per spec: building them
    took about a tenth of a 28 px image's preprocessing."""
    std32 = np.asarray(std, dtype=np.float32)[:, None, None]
    mean32 = np.asarray(mean, dtype=np.float32)[:, None, None]
    scale, shift = np.float32(1.0 / 255.0) / std32, mean32 / std32
    scale.flags.writeable = shift.flags.writeable = False  # shared by every call
    return scale, shift
