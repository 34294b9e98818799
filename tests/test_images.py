"""Image decoding shared by training, `fer predict` and the web upload (fer_utils.data.index).

High bit depths are rescaled to 8 bits by a stated rule (or refused, naming the file and mode),
transparency is composited on neutral grey, and ordinary JPEGs decode exactly as before.
"""
from __future__ import annotations

import numpy as np
import pytest
from datafixtures import write_image
from PIL import Image

from fer_utils.data import open_image
from fer_utils.data.index import load_rgb
from fer_utils.errors import DataError

GREY = (128, 128, 128)


def grey_values(image: Image.Image) -> list[int]:
    """The first row of an RGB image whose three channels must be equal."""
    rgb = np.asarray(image)
    assert image.mode == "RGB" and (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return rgb[0, :, 0].tolist()


# --- bit depths ---------------------------------------------------------------------------------

SIXTEEN_BIT = np.array([[0, 128, 129, 257 * 100, 257 * 100 + 128, 65535]], dtype=np.uint16)
EIGHT_BIT = [0, 0, 1, 100, 100, 255]  # round(v / 257); exact halves (128.5 steps) do not occur


def test_16_bit_greyscale_png_is_rescaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(SIXTEEN_BIT).save(path)
    assert Image.open(path).mode == "I;16"
    assert grey_values(open_image(path)) == EIGHT_BIT


def test_32_bit_integer_image_is_read_as_16_bit_samples(tmp_path):
    path = tmp_path / "deep.tif"
    Image.fromarray(SIXTEEN_BIT.astype(np.int32)).save(path)
    assert Image.open(path).mode == "I"
    assert grey_values(open_image(path)) == EIGHT_BIT
    bad = tmp_path / "negative.tif"
    Image.fromarray(np.array([[-1, 70000]], dtype=np.int32)).save(bad)
    with pytest.raises(DataError, match=rf"{bad}: .*mode I .*-1\.\.70000.*0\.\.65535"):
        open_image(bad)


def test_float_image_in_unit_range_is_scaled_and_others_refused(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0, 0.2]], dtype=np.float32)).save(path)
    assert Image.open(path).mode == "F"
    assert grey_values(open_image(path)) == [0, 128, 255, 51]
    for name, values in {"range255.tif": [0.0, 200.0], "nan.tif": [0.0, np.nan], "neg.tif": [-0.5, 0.5]}.items():
        bad = tmp_path / name
        Image.fromarray(np.array([values], dtype=np.float32)).save(bad)
        with pytest.raises(DataError, match=rf"{bad}: .*mode F.*\[0, 1\]"):
            open_image(bad)


# --- transparency -------------------------------------------------------------------------------

def test_transparency_is_composited_on_neutral_grey(tmp_path):
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.array([[[255, 0, 0, 0], [255, 0, 0, 255], [0, 0, 255, 128]]], dtype=np.uint8)).save(rgba)
    # half-transparent blue: 128 * 127/255 + 255 * 128/255 = 191.75
    assert np.asarray(open_image(rgba))[0].tolist() == [list(GREY), [255, 0, 0], [64, 64, 192]]

    la = tmp_path / "la.png"
    Image.fromarray(np.array([[[255, 0], [10, 255]]], dtype=np.uint8)).save(la)  # H x W x 2: LA
    assert grey_values(open_image(la)) == [128, 10]

    palette = tmp_path / "palette.png"
    p = Image.new("P", (2, 1))
    p.putpalette([255, 0, 0, 0, 255, 0])
    p.putpixel((1, 0), 1)
    p.save(palette, transparency=0)  # palette entry 0 (red) is transparent
    assert np.asarray(open_image(palette))[0].tolist() == [list(GREY), [0, 255, 0]]


def test_in_memory_images_and_arrays_take_the_same_path():
    from fer_utils.data.index import to_rgb

    rgba = np.array([[[255, 0, 0, 0], [1, 2, 3, 255]]], dtype=np.uint8)
    assert np.asarray(to_rgb(rgba, "x"))[0].tolist() == [list(GREY), [1, 2, 3]]
    assert np.asarray(to_rgb(Image.fromarray(rgba), "x"))[0].tolist() == [list(GREY), [1, 2, 3]]
    assert grey_values(to_rgb(Image.fromarray(SIXTEEN_BIT), "x")) == EIGHT_BIT
    assert grey_values(load_rgb(None, np.full((2, 2), 77, np.uint8))) == [77, 77]
    with pytest.raises(DataError, match=r"upload\.png: image array must be uint8.*float64"):
        to_rgb(np.zeros((4, 4)), "upload.png")
    with pytest.raises(DataError, match=r"thing: not an image.*list"):
        to_rgb([1, 2], "thing")


def test_a_mode_without_an_rgb_conversion_is_refused_naming_it():
    from fer_utils.data.index import to_rgb

    with pytest.raises(DataError, match=r"odd\.png: .*mode 'La'"):
        to_rgb(Image.new("La", (2, 2)), "odd.png")  # premultiplied grey + alpha: Pillow cannot convert it


# --- ordinary images: unchanged -----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_ordinary_jpegs_decode_byte_for_byte_as_before(tmp_path, mode):
    """The study's metrics depend on this: draft decoding of RGB/greyscale JPEGs is untouched."""
    rng = np.random.default_rng(0)
    shape = (300, 260, 3) if mode == "RGB" else (300, 260)
    path = tmp_path / f"{mode}.jpg"
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path, quality=90)
    for draft in (None, 100, 48):
        with Image.open(path) as reference:
            if draft is not None:
                reference.draft("RGB", (draft, draft))
            expected = reference.convert("RGB")
        got = open_image(path, draft_size=draft)
        assert got.size == expected.size and got.tobytes() == expected.tobytes()


def test_greyscale_png_still_converts_plainly(tmp_path):
    path = write_image(tmp_path / "plain.png", colour=(5, 6, 7))
    assert open_image(path).getpixel((0, 0)) == (5, 6, 7)
