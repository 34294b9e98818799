"""The face step (fer_utils.inference.faces) with the real OpenCV Haar cascade on a real photo."""
from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
from matplotlib.cbook import get_sample_data
from PIL import Image

from fer_utils.inference import faces
from fer_utils.errors import ConfigError, DataError
from fer_utils.inference.faces import NOTICE_ALIGNED, NOTICE_NO_FACE, FaceCrop, crop_face, detect_faces

GRACE = get_sample_data("grace_hopper.jpg", asfileobj=False)   # 512 x 600 portrait, one face


@pytest.fixture(scope="module")
def grace() -> Image.Image:
    with Image.open(GRACE) as image:
        return image.convert("RGB")


@pytest.fixture(scope="module")
def grace_box(grace):
    return detect_faces(grace)[0]


def center(box):
    x, y, w, h = box
    return np.array([x + w / 2, y + h / 2])


def test_the_face_in_the_photo_is_found_where_it_is(grace):
    assert grace.size == (512, 600)
    boxes = detect_faces(grace)
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    assert all(isinstance(v, int) for v in boxes[0])
    assert 190 <= w <= 260 and abs(w - h) <= 2            # ~222 px: a head, not a button or the whole photo
    assert 230 <= x + w / 2 <= 300 and 180 <= y + h / 2 <= 250   # around (266, 216): the face, not the uniform


def test_the_crop_is_a_square_around_the_face_with_the_margin(grace, grace_box):
    result = crop_face(grace, margin=0.25)
    assert isinstance(result, FaceCrop) and result.found and result.notice() is None
    assert result.box == grace_box and result.faces == 1 and result.detector == "opencv-haar-frontalface-default"
    x, y, w, h = grace_box
    x0, y0, x1, y1 = result.crop_box
    # the box grown by a quarter on each side (to the pixel: the crop's corners are whole pixels)
    assert x0 <= x - 0.25 * w + 1 and y0 <= y - 0.25 * h + 1 and x1 >= x + 1.25 * w - 1 and y1 >= y + 1.25 * h - 1
    assert x0 < x and y0 < y and x1 > x + w and y1 > y + h
    assert x1 - x0 == y1 - y0 == round(1.5 * max(w, h))   # square, the box plus a quarter on each side
    assert 0 <= x0 and 0 <= y0 and x1 <= 512 and y1 <= 600
    assert result.image.size == (x1 - x0, y1 - y0) and result.image.mode == "RGB"
    assert np.array_equal(np.asarray(result.image), np.asarray(grace.crop(result.crop_box)))
    assert result.to_dict() == {"box": list(grace_box), "crop_box": [x0, y0, x1, y1], "notice": None}
    wider = crop_face(grace, margin=0.5)
    assert wider.crop_box[2] - wider.crop_box[0] == round(2 * max(w, h))
    assert crop_face(grace, margin=0).crop_box[2] - crop_face(grace, margin=0).crop_box[0] == max(w, h)


def test_a_crop_that_would_stick_out_is_moved_inside_and_stays_square(grace, grace_box):
    result = crop_face(grace, margin=0.6)      # 2.2 x 222 = 488 px: sticks out above (the face is at y=105)
    x0, y0, x1, y1 = result.crop_box
    assert y0 == 0 and x1 - x0 == y1 - y0 == round(2.2 * max(grace_box[2:]))
    huge = crop_face(grace, margin=3.0)        # larger than the photo: its short side, still square
    assert huge.crop_box == (0, huge.crop_box[1], 512, huge.crop_box[1] + 512)
    x, y, w, h = grace_box
    assert huge.crop_box[1] <= y and huge.crop_box[3] >= y + h


def test_boxes_are_in_the_original_coordinates_when_padded_or_upscaled(grace, grace_box):
    canvas = Image.new("RGB", (640, 640), (128, 128, 128))
    canvas.paste(grace, (100, 30))
    shifted = detect_faces(canvas)
    assert len(shifted) == 1           # the context changes the cascade's box a little, not where it is
    assert np.abs(center(shifted[0]) - center(grace_box) - (100, 30)).max() <= 10
    assert abs(shifted[0][2] - grace_box[2]) <= 0.15 * grace_box[2]
    # 1280 px, shrunk for detection like the canvas: the box must be twice its box (a box not mapped
    # back would be half or a quarter of it; the two shrunk images differ only by resampling)
    (doubled,) = detect_faces(canvas.resize((1280, 1280), Image.NEAREST))
    assert np.abs(np.subtract(doubled, [2 * v for v in shifted[0]])).max() <= 8
    # an ordinary 2x copy (shrunk to 546 x 640 for detection): about twice the box
    (big,) = detect_faces(grace.resize((1024, 1200)))
    assert np.abs(center(big) - 2 * center(grace_box)).max() <= 20
    assert abs(big[2] - 2 * grace_box[2]) <= 0.15 * 2 * grace_box[2]
    result = crop_face(grace.resize((1024, 1200)))
    assert result.box == big and result.crop_box[2] - result.crop_box[0] == round(1.5 * max(big[2:]))


@pytest.mark.parametrize("blank", [
    Image.new("RGB", (400, 300), (128, 128, 128)),
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)),
    Image.new("RGB", (10, 10), (30, 40, 50)),       # smaller than the cascade's window
], ids=["grey", "noise", "tiny"])
def test_no_face_gives_the_whole_image_and_says_so(blank):
    assert detect_faces(blank) == []
    result = crop_face(blank)
    assert not result.found and result.box is None and result.crop_box is None and result.faces == 0
    assert np.array_equal(np.asarray(result.image), np.asarray(blank))
    assert result.notice() == NOTICE_NO_FACE == "no face found: the whole image was used"
    assert result.to_dict() == {"box": None, "crop_box": None, "notice": NOTICE_NO_FACE}


def test_an_image_that_already_is_a_face_crop_is_used_whole(grace):
    tight = grace.crop((130, 80, 400, 350))      # 270 x 270 around the face, like a RAF-DB aligned image
    result = crop_face(tight)
    assert result.found and result.crop_box is None and result.notice() == NOTICE_ALIGNED
    x, y, w, h = result.box
    assert w >= 0.6 * 270 and 0 <= x and x + w <= 270
    assert np.array_equal(np.asarray(result.image), np.asarray(tight))
    never = crop_face(tight, aligned_fraction=1.01)  # above 1: always cut out
    assert never.crop_box is not None and never.box == result.box and never.notice() is None


def test_grey_rgba_and_arrays_are_accepted(grace, grace_box):
    grey = grace.convert("L")
    rgba = grace.convert("RGBA")
    for image in (grey, rgba, np.asarray(grey), np.asarray(grace), np.asarray(rgba)):
        result = crop_face(image)
        assert result.image.mode == "RGB" and result.image.size == crop_face(grace).image.size
        assert np.abs(np.array(result.box) - grace_box).max() <= 2, type(image)
    hidden = np.asarray(rgba).copy()
    hidden[..., 3] = 0                          # fully transparent: neutral grey, so no face
    result = crop_face(hidden)
    assert not result.found and np.asarray(result.image).max() == np.asarray(result.image).min() == 128


@pytest.mark.parametrize("kwargs", [{"margin": -0.1}, {"margin": float("nan")}, {"margin": "0.2"},
                                    {"margin": True}, {"aligned_fraction": 0}, {"aligned_fraction": -1},
                                    {"aligned_fraction": float("inf")}])
def test_bad_arguments_are_config_errors(grace, kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ConfigError, match=f"^{name} must be a finite number"):
        crop_face(grace, **kwargs)


@pytest.mark.parametrize("image", [np.zeros((20, 20), dtype=np.float32), np.zeros((20, 20, 2), dtype=np.uint8),
                                   "photo.jpg"])
def test_non_images_are_data_errors(image):
    with pytest.raises(DataError, match="image"):
        detect_faces(image)


def test_faces_decode_as_training_does(grace):
    """One decoder (fer_utils.data.index.to_rgb): a 16-bit grey photo is searched, not refused."""
    from fer_utils.data.index import to_rgb

    grey16 = Image.fromarray(np.asarray(grace.convert("L"), dtype=np.uint16) * 257)
    assert grey16.mode.startswith("I;16")
    boxes = detect_faces(grey16)
    assert len(boxes) == 1 and boxes == detect_faces(to_rgb(grey16, "grey16"))


def test_a_missing_cascade_is_a_config_error_naming_it(grace, tmp_path, monkeypatch):
    import cv2

    monkeypatch.setattr(faces, "_local", threading.local())   # no classifier loaded yet in this thread
    monkeypatch.setattr(cv2.data, "haarcascades", str(tmp_path))
    with pytest.raises(ConfigError, match=f"^{tmp_path / faces.CASCADE_FILE}: the OpenCV Haar cascade cannot be"):
        crop_face(grace)
    (tmp_path / faces.CASCADE_FILE).write_text("not a cascade")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        crop_face(grace)
    monkeypatch.delattr(cv2, "data")
    with pytest.raises(ConfigError, match="haarcascades"):
        crop_face(grace)


def test_concurrent_calls_from_threads_agree(grace, grace_box):
    images = [grace, grace.resize((1024, 1200)), grace.crop((0, 0, 512, 450))]
    expected = [detect_faces(image) for image in images]
    results, errors = {}, []

    def work(worker):
        try:
            results[worker] = [detect_faces(images[(worker + i) % 3]) for i in range(6)]
        except Exception as exc:  # noqa: BLE001 - any failure in a thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == 8
    for worker, found in results.items():
        assert found == [expected[(worker + i) % 3] for i in range(6)]
    assert expected[0] == [grace_box]


def test_the_module_does_not_load_torch():
    code = "import sys, fer_utils.inference.faces; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
