import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from contract import ImageError, ModelSpec, model_input, normalize, pixels, preprocess

SPEC = ModelSpec(name="m", arch="a", labels=("a", "b"), height=8, width=8, color_mode="L",
                 mean=(0.5,), std=(0.25,))  # fmt: skip


def png_bytes(img: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def test_normalizes_per_spec():
    img = Image.new("L", (8, 8), 255)
    x = preprocess(img, SPEC)
    assert x.shape == (1, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x, (1.0 - 0.5) / 0.25)


@pytest.mark.parametrize("mode, size", [("L", (8, 8)), ("RGB", (6, 5))])
def test_preprocess_is_normalize_of_pixels(mode, size):
    """The served uint8 path and training's float path part only at normalize()."""
    rng = np.random.default_rng(1)
    spec = replace(
        SPEC,
        color_mode=mode,
        height=size[1],
        width=size[0],
        mean=(0.5, 0.4, 0.3)[: len(mode)],
        std=(0.25, 0.2, 0.1)[: len(mode)],
    )
    data = png_bytes(Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)))
    p = pixels(data, spec)
    assert p.dtype == np.uint8 and p.shape == (len(mode), size[1], size[0])
    assert p.flags.c_contiguous
    x = preprocess(data, spec)
    np.testing.assert_array_equal(normalize(p, spec), x)  # bit for bit
    np.testing.assert_allclose(
        x,
        (p / 255.0 - np.array(spec.mean)[:, None, None]) / np.array(spec.std)[:, None, None],
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_array_equal(model_input(data, spec), x)
    np.testing.assert_array_equal(model_input(data, replace(spec, dtype="uint8")), p)


def test_same_array_from_image_bytes_and_path(tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (20, 13, 3), dtype=np.uint8), "RGB")
    data = png_bytes(img)
    (tmp_path / "x.png").write_bytes(data)
    a = preprocess(img, SPEC)
    np.testing.assert_array_equal(a, preprocess(data, SPEC))
    np.testing.assert_array_equal(a, preprocess(tmp_path / "x.png", SPEC))


def test_rgb_spec_and_center_crop():
    spec = ModelSpec(name="m", arch="a", labels=("a", "b"), height=4, width=4,
                     resize_policy="resize_center_crop", resize_scale=1.5)  # fmt: skip
    x = preprocess(Image.new("RGB", (30, 10), (255, 0, 0)), spec)
    assert x.shape == (3, 4, 4)
    np.testing.assert_allclose(x[0], (1 - 0.485) / 0.229, rtol=1e-6)


def _palette_red() -> Image.Image:
    img = Image.new("P", (5, 5), 0)
    img.putpalette([255, 0, 0] * 256)
    return img


# (image, the gray level 0..255 it must become): alpha composited on black, palette and CMYK
# converted, 16-bit scaled, 1-bit stretched.
ODD_MODES = {
    "RGBA": (Image.new("RGBA", (5, 5), (255, 255, 255, 0)), 0),
    "LA": (Image.new("LA", (5, 5), (200, 255)), 200),
    "P": (_palette_red(), 76),  # ITU-R 601 luma of pure red
    "CMYK": (Image.new("CMYK", (5, 5), (0, 0, 0, 0)), 255),
    "I;16": (Image.fromarray(np.full((5, 5), 65535, dtype=np.uint16)), 255),
    "1": (Image.new("1", (5, 5), 1), 255),
}


@pytest.mark.parametrize("mode", ODD_MODES)
def test_odd_modes_become_the_spec_mode_with_the_right_values(mode):
    img, gray = ODD_MODES[mode]
    assert img.mode == mode
    x = preprocess(img, SPEC)
    assert x.shape == (1, 8, 8)
    np.testing.assert_allclose(x, (gray / 255 - 0.5) / 0.25, atol=1e-6)


def test_no_nan_or_inf_survives_preprocessing():
    """A float image may hold NaN and Inf; the model input never does (the server's
    preprocessing is why the ensemble path needs no NaN check: docs/serve.md)."""
    pixels = np.full((8, 8), np.nan, np.float32)
    pixels[0, 0], pixels[1, 1], pixels[2, 2] = np.inf, -np.inf, 1e30
    buf = io.BytesIO()
    Image.fromarray(pixels, "F").save(buf, format="TIFF")
    for spec in (SPEC, ModelSpec(name="m", arch="a", labels=("a", "b"), height=8, width=8)):
        assert np.isfinite(preprocess(buf.getvalue(), spec)).all()


def test_sixteen_bit_is_scaled_not_clipped():
    img = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert img.mode == "I;16"
    x = preprocess(img, SPEC)
    np.testing.assert_allclose(x * 0.25 + 0.5, 128 / 255, atol=1 / 255)


def test_exif_rotation_is_applied():
    # 16 wide, 8 high, every pixel different: any other turn or flip gives other values.
    pixels = np.arange(128, dtype=np.uint8).reshape(8, 16) * 2
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = png_bytes(Image.fromarray(pixels, "L"), exif=exif.tobytes())
    spec = ModelSpec(**{**SPEC.__dict__, "height": 16, "width": 8})  # the displayed size
    shown = np.rot90(pixels, k=-1)  # clockwise
    np.testing.assert_allclose(preprocess(data, spec)[0], (shown / 255 - 0.5) / 0.25, atol=1e-6)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"this is not an image", "not a readable image"),
        (png_bytes(Image.new("L", (64, 64)))[:60], "corrupt or truncated|not a readable"),
    ],
)
def test_bad_bytes_raise_image_error(data, message):
    with pytest.raises(ImageError, match=message):
        preprocess(data, SPEC)


def test_decompression_bomb_is_refused():
    # A PNG header claiming 30000x30000 pixels: refused before any pixel is decoded.
    img = Image.new("1", (30000, 30000))
    with pytest.raises(ImageError, match="decompression bomb"):
        preprocess(png_bytes(img), SPEC)
