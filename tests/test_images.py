"""glip.images.load_image: the pixel limit, BGR arrays, alpha, palette, 16-bit, CMYK, EXIF switch."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from glip.images import MAX_PIXELS, ImageError, load_image


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory):
    """A 20000 x 20000 (400 megapixel) 1-bit PNG: a few kB on disk, written in about a second."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    Image.new("1", (20000, 20000)).save(path)
    return path


def test_a_400_megapixel_file_is_one_clear_error(huge_png):
    assert huge_png.stat().st_size < 1_000_000
    limit = Image.MAX_IMAGE_PIXELS
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        with pytest.raises(ImageError) as info:
            load_image(huge_png)
    assert time.perf_counter() - start < 5  # refused from the header, not decoded
    message = str(info.value)
    assert str(huge_png) in message and "400,000,000 pixels" in message
    assert f"over the limit of {MAX_PIXELS:,}" in message and "max_pixels" in message
    assert "--max-pixels" in message and "\n" not in message
    assert Image.MAX_IMAGE_PIXELS == limit  # PIL's global setting is left as it was
    with pytest.raises(ImageError, match="over the limit of 1,000"):
        load_image(huge_png, max_pixels=1000)


def test_the_limit_is_configurable(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (40, 30), (10, 20, 30)).save(path)
    with pytest.raises(ImageError, match="1,200 pixels \\(40x30\\), over the limit of 1,199"):
        load_image(path, max_pixels=1199)
    assert load_image(path, max_pixels=1200).size == (40, 30)
    assert load_image(path, max_pixels=None).size == (40, 30)


def test_images_over_pils_own_limit_open_with_a_higher_max_pixels(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL would refuse > 200 pixels outright
    path = tmp_path / "medium.png"
    Image.new("RGB", (30, 20), (1, 2, 3)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(path).size == (30, 20)
    assert Image.MAX_IMAGE_PIXELS == 100


def test_bgr_arrays_are_flipped():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(load_image(rgb[:, :, ::-1], bgr=True)), rgb)
    np.testing.assert_array_equal(np.asarray(load_image(rgb)), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((5, 7, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(np.asarray(load_image(bgra, bgr=True)), rgb)
    with pytest.raises(ImageError, match="BGR"):
        load_image(np.zeros((4, 4, 2), np.uint8), bgr=True)


def test_modes_decode_to_rgb(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (200, 0, 0, 0))  # fully transparent: white
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([10, 20, 30] + [0] * 765)
    assert load_image(palette).getpixel((0, 0)) == (10, 20, 30)
    sixteen = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    assert load_image(sixteen).getpixel((0, 0)) == (255, 255, 255)
    cmyk = Image.new("CMYK", (4, 4), (0, 0, 0, 0))
    path = tmp_path / "cmyk.jpg"
    cmyk.save(path)
    assert load_image(path).mode == "RGB"


def test_exif_transpose_can_be_switched_off(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    Image.new("RGB", (16, 8)).save(path, exif=exif)
    assert load_image(path).size == (8, 16)
    assert load_image(path, exif_transpose=False).size == (16, 8)


def test_value_rules_refuse_what_would_be_silently_wrong():
    import numpy as np
    import pytest
    import torch

    from glip.images import ImageError, load_image

    image = np.full((8, 8, 3), 0.5, dtype=np.float32)
    for bad, pattern in [
        (np.where(np.eye(8, dtype=bool)[..., None], np.nan, image), "NaN / infinite"),
        (np.where(np.eye(8, dtype=bool)[..., None], np.inf, image), "NaN / infinite"),
        (image * 255, r"in \[0, 1\]"),
        (np.full((8, 8, 3), 300, dtype=np.int16), "0..255"),
        (np.full((8, 8, 3), -1, dtype=np.int32), "0..255"),
        (np.ones((8, 8, 3), dtype=bool), "dtype bool"),
        (np.full((8, 8, 3), None, dtype=object), "dtype object"),
        (torch.full((3, 8, 8), float("nan")), "NaN"),
        (torch.full((3, 8, 8), 300, dtype=torch.int16), "0..255"),
    ]:
        with pytest.raises(ImageError, match=pattern):
            load_image(bad)
    # one pixel a hair above 1 (rounding) is clipped, not a reason to blacken or refuse the image
    nearly = image.copy()
    nearly[0, 0, 0] = 1.0001
    assert np.asarray(load_image(nearly))[1, 1, 0] == 128
    assert np.asarray(load_image(np.full((8, 8, 3), 200, dtype=np.int16)))[0, 0, 0] == 200


def test_a_large_float_image_is_converted_without_float64_copies():
    """A 20000 x 20000 float32 tensor peaked at 14.7 GB (float64 copies of the whole image): the conversion now
    needs the uint8 result beside the input plus small bands. Measured here on 2000 x 2000 (48 MB)."""
    import tracemalloc

    from glip.images import to_uint8

    rng = np.random.default_rng(0)
    image = rng.random((2000, 2000, 3), dtype=np.float32)
    image[0, 0, 0] = 1.0001
    expected = np.clip(np.round(image.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    tracemalloc.start()
    try:
        result = to_uint8(image)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(result, expected)  # the same values as converting the whole image at once
    assert peak < image.nbytes / 4 + 24 * 2**20, (
        f"peak {peak / 2**20:.0f} MB for a {image.nbytes / 2**20:.0f} MB input"
    )
    chw = torch.from_numpy(image).permute(2, 0, 1)  # a (C, H, W) view, as users pass tensors
    assert np.array_equal(np.asarray(load_image(chw)), expected)


def test_int16_tensors_and_arrays_follow_the_same_rule():
    values = np.array([[[0, 17, 255]] * 4] * 4, dtype=np.int16)
    assert np.array_equal(
        np.asarray(load_image(values)), np.asarray(load_image(torch.from_numpy(values).permute(2, 0, 1)))
    )
    for bad in (np.full((4, 4, 3), 256, dtype=np.int16), torch.full((3, 4, 4), 256, dtype=torch.int16)):
        with pytest.raises(ImageError, match="0..255"):  # no wrap-around modulo 256, no saturation
            load_image(bad)


def test_glip_detect_threshold_nan_is_one_clear_error(tmp_path, capsys):
    from glip.cli import main

    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    argv = ["detect", str(tmp_path / "a.png"), "--classes", "cat", "--model", "random:tiny_random"]
    assert main([*argv, "--threshold", "nan", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("glip detect: error")]
    assert len(errors) == 1 and "threshold must be a number in [0, 1], got nan" in errors[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "predictions.json").exists()
